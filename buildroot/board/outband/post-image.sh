#!/bin/sh
# Assembles disk.img from the boot partition and the root filesystem.
set -e
exec support/scripts/genimage.sh -c "$BR2_EXTERNAL_OUTBAND_PATH/board/outband/genimage.cfg"
