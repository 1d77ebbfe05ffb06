################################################################################
#
# outband-agent: installs the prebuilt static agent (built by `cargo xtask dist`)
#
################################################################################

OUTBAND_AGENT_VERSION = 0.1.0
OUTBAND_AGENT_SITE_METHOD = local
# Every external .mk is parsed even when the package is disabled: never derive
# _SITE from a Kconfig string that may be empty.
OUTBAND_AGENT_SITE = $(BR2_EXTERNAL_OUTBAND_PATH)/package/outband-agent/src
OUTBAND_AGENT_LICENSE = Apache-2.0
OUTBAND_AGENT_REDISTRIBUTE = NO

ifeq ($(BR2_aarch64),y)
OUTBAND_AGENT_RUST_TARGET = aarch64-unknown-linux-musl
else
OUTBAND_AGENT_RUST_TARGET = x86_64-unknown-linux-musl
endif

OUTBAND_AGENT_BINARY = $(call qstrip,$(BR2_PACKAGE_OUTBAND_AGENT_BINARY_DIR))/outband-agent

define OUTBAND_AGENT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(OUTBAND_AGENT_BINARY) $(TARGET_DIR)/usr/bin/outband-agent
endef

$(eval $(generic-package))
