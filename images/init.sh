#!/bin/sh
# /init of the lulab host initramfs (busybox). It mounts the basics, loads
# the modules listed in /etc/lulab/modules.load (dependencies first, written by
# the harness), starts the guest agent (again whenever it dies) and keeps a
# shell on the console.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
while read -r mod; do
    insmod "/lib/modules/lulab/$mod" || echo "lulab-init: insmod $mod failed"
done < /etc/lulab/modules.load
# The agent is started again whenever it dies (a VMM restarted after a
# crash): the new one holds no engine until the harness asks it to take a
# kept one back (dma_reattach).
(
    while true; do
        /bin/lulab-agent
        echo "lulab-init: agent exited ($?), starting it again" > /dev/kmsg
        sleep 0.2
    done
) &
echo "lulab-init: ready (agent loop pid $!)"
while true; do
    setsid cttyhack sh -l
done
