include $(sort $(wildcard $(BR2_EXTERNAL_OUTBAND_PATH)/package/*/*.mk))
