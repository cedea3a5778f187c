#!/bin/sh
# /init of the lulab host initramfs (busybox). It mounts the basics, loads
# the modules listed in /etc/lulab/modules.load (dependencies first, written by
# the harness), starts the guest agent and keeps a shell on the console.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
while read -r mod; do
    insmod "/lib/modules/lulab/$mod" || echo "lulab-init: insmod $mod failed"
done < /etc/lulab/modules.load
/bin/lulab-agent &
echo "lulab-init: ready (agent pid $!)"
while true; do
    setsid cttyhack sh -l
done
