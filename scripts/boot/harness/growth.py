"""--grow SIZE: first-boot growth of the root partition and filesystem.

The disk file is made SIZE larger before the boot (the image was sized for
its content, the "device" is larger: an image written to a bigger SD card
or cloud volume).  The tree carries what a distribution's image carries
(tree variant "grow": sfdisk and scripts/boot/growroot, a oneshot unit in
sysinit.target imitating nixpkgs sd-image.nix's first-boot resize).  With
GPT the backup header is left in the middle of the grown disk; the guest's
sfdisk moves it to the end when it rewrites the table, as it does on any
such disk.

The check "growth", over ssh: the unit is active, its journal shows `df`
of / before and after growing, the after size is at least 90 % of SIZE
larger than the before size, the before size is at most the root
partition's size in the disk as built (so it was measured before the
growth), `df` now shows the after size, and for GPT the last sector of
the disk holds the backup header ("EFI PART") and `sfdisk --verify`
passes.
"""
import re

CHECK = "growth"


def guest_script(table):
    s = '''echo "### grow-unit"; systemctl is-active rootbox-growroot.service 2>&1
echo "### grow-journal"; journalctl -b -u rootbox-growroot.service --no-pager -o cat 2>&1
echo "### grow-df"; df -B1 --output=size / | tail -1 | tr -d " "
echo "### grow-lsblk"; lsblk -b -o NAME,SIZE,TYPE /dev/vda 2>&1
'''
    if table == "gpt":
        s += '''echo "### grow-gpt"; n=$(blockdev --getsz /dev/vda); dd if=/dev/vda bs=512 skip=$((n - 1)) count=1 status=none | head -c 8; echo
sfdisk --verify /dev/vda 2>&1; echo "rc=$?"
'''
    return s


def check(res, sec, table, grow_bytes, part_bytes):
    """``part_bytes``: the root partition's size in the disk as built."""
    bad, ev = [], []
    unit = (sec.get("grow-unit") or ["?"])[-1]
    if unit != "active":
        bad.append(f"rootbox-growroot.service is {unit}")
    journal = sec.get("grow-journal", [])
    ev.append("--- journalctl -u rootbox-growroot ---\n" + "\n".join(journal[-15:]))

    def df(word):
        for line in journal:
            m = re.search(rf"df-{word} (\d+)", line)
            if m:
                return int(m.group(1))
        return None

    before, after = df("before"), df("after")
    now = (sec.get("grow-df") or ["?"])[-1]
    now = int(now) if now.isdigit() else None
    ev.append(f"df of /: before {before}, after {after}, now {now} bytes; grown by {grow_bytes} bytes; "
              f"root partition as built {part_bytes} bytes")
    if before is None or after is None:
        bad.append("no df-before/df-after in the unit's journal")
    else:
        if after - before < grow_bytes * 9 // 10:
            bad.append(f"df grew by {after - before} bytes, want at least 90 % of {grow_bytes}")
        if before > part_bytes:
            bad.append(f"df before ({before}) is larger than the partition as built ({part_bytes})")
        if now != after:
            bad.append(f"df now ({now}) is not the size after growing ({after})")
    ev.append("--- lsblk ---\n" + "\n".join(sec.get("grow-lsblk", [])))
    if table == "gpt":
        lines = sec.get("grow-gpt", [])
        ev.append("--- last sector; sfdisk --verify ---\n" + "\n".join(lines))
        if not lines or lines[0] != "EFI PART":
            bad.append("the last sector of the disk is not the backup GPT header")
        if not lines or lines[-1] != "rc=0":
            bad.append("sfdisk --verify failed")
    res.set(CHECK, not bad, ("" if not bad else f"wrong: {'; '.join(bad)}\n") + "\n".join(ev))
