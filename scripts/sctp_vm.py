#!/usr/bin/env python3
"""Run a command inside a throw-away QEMU VM whose (Debian) kernel has SCTP.

The host kernel of the development and CI machines has no SCTP (``socket(AF_INET,
SOCK_STREAM, IPPROTO_SCTP)`` fails with errno 93).  Debian's kernel has it as a module, and
QEMU boots it under TCG in a few seconds.  This runner (stdlib only):

1. once, caches under ``<project>/.vmcache/`` (git-ignored): the ``linux-image-<ver>-amd64``
   package that ``linux-image-amd64`` depends on (``apt-get download``, ``dpkg-deb -x``,
   ``depmod -b`` when kmod is there), an uncompressed ELF kernel taken out of vmlinuz with ``lzma`` (saves ~4 s
   of decompression per boot under TCG), and an initramfs of busybox-static plus the modules
   virtio_pci, 9pnet_virtio, 9p, overlay, crc32c_generic, sctp, veth, dependencies
   first (read from each module's ``.modinfo``, as ``modprobe --show-depends`` would);
2. boots ``qemu-system-x86_64 -accel tcg -cpu max -smp 1 -M pc -m 1024`` under ``timeout``;
   the guest mounts the host's ``/`` read-only over 9p with a tmpfs overlay, shares the
   project folder read-write at the same path, chroots, runs the command there and writes
   its exit status into the shared folder;
3. exits with the command's exit status (125 when the VM gave none back, 124 on timeout).

Usage::

    .venv/bin/python scripts/sctp_vm.py -- $PWD/.venv/bin/python -m pytest -m sctp tests/sctp -q

Options: ``--timeout S`` (default 900), ``--mem MB`` (1024), ``--workdir DIR`` (the project
folder), ``--cache DIR``, ``--prepare`` (build the cache only).  Needs the Debian packages
qemu-system-x86, busybox-static and apt (apt-get download).
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "crc32c_generic", "sctp", "veth")
BUSYBOX_APPLETS = ("sh", "mount", "insmod", "mkdir", "poweroff", "cat", "sed", "chroot",
                   "sync", "umount")
CMD_FILE = ".vm_cmd"
RC_FILE = ".vm_rc"

INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "insmod $m failed"; done
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower || poweroff -f
mount -t tmpfs rw /rw; mkdir -p /rw/u /rw/w
mount -t overlay -o lowerdir=/lower,upperdir=/rw/u,workdir=/rw/w root /mnt || poweroff -f
mount -t proc p /mnt/proc; mount -t sysfs s /mnt/sys; mount -t devtmpfs d /mnt/dev; mount -t tmpfs r /mnt/run
mkdir -p /mnt/dev/shm /mnt/dev/pts; mount -t tmpfs shm /mnt/dev/shm; mount -t devpts pts /mnt/dev/pts
mount -t tmpfs t /mnt/tmp
W=$(arg vm_work); K=$(arg vm_kroot); V=$(uname -r)
mkdir -p /mnt/lib/modules/$V && mount --bind /mnt$K/lib/modules/$V /mnt/lib/modules/$V
mkdir -p /mnt$W && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work /mnt$W
chroot /mnt /bin/sh -c "ip link set lo up 2>/dev/null; cd $W && HOME=/root NFMESH_IN_VM=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh .vm_cmd; echo \$? > .vm_rc"
sync; umount /mnt$W; poweroff -f
"""


def log(msg: str) -> None:
    print(f"sctp_vm: {msg}", file=sys.stderr, flush=True)


def kernel_package() -> str:
    """The versioned kernel package that linux-image-amd64 depends on."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-") and line.split()[1][12:13].isdigit():
            return line.split()[1]
    raise SystemExit("sctp_vm: apt-cache shows no linux-image-<version> dependency of "
                     "linux-image-amd64 (run apt-get update)")


def fetch_kernel(cache: Path) -> tuple[Path, str]:
    """Download and unpack the Debian kernel package; return (kroot, version)."""
    kroot = cache / "kroot"
    kver_file = cache / "kver"
    if kver_file.exists() and kroot.is_dir():
        return kroot, kver_file.read_text().strip()
    pkg = kernel_package()
    log(f"downloading {pkg} (once)")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(["apt-get", "download", pkg], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise SystemExit(f"sctp_vm: apt-get download {pkg} produced no .deb")
        shutil.rmtree(kroot, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(kroot)], check=True)
    kver = sorted(p.name for p in (kroot / "lib/modules").iterdir())[0]
    if shutil.which("depmod"):  # lets a guest with kmod modprobe more; not needed here
        subprocess.run(["depmod", "-b", str(kroot), kver], check=True)
    kver_file.write_text(kver + "\n")
    return kroot, kver


def extract_vmlinux(kroot: Path, kver: str, dest: Path) -> None:
    """Uncompressed ELF kernel from vmlinuz (the xz payload), bootable through PVH."""
    data = (kroot / "boot" / f"vmlinuz-{kver}").read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise SystemExit("sctp_vm: no xz payload in vmlinuz")
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(lzma.LZMADecompressor().decompress(data[start:]))
    tmp.replace(dest)


def _module_index(kroot: Path, kver: str) -> dict[str, Path]:
    """Module name (dashes as underscores) -> .ko path."""
    index: dict[str, Path] = {}
    for path in (kroot / "lib/modules" / kver / "kernel").rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        data = lzma.decompress(data)
    return data


def _depends(data: bytes) -> list[str]:
    """The ``depends=`` entry of a module's .modinfo section (what modprobe reads)."""
    m = re.search(rb"\0depends=([^\0]*)\0", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_files(kroot: Path, kver: str) -> list[Path]:
    """Module files to insmod, dependencies first, without repeats (the order
    ``modprobe --show-depends`` gives; done here so that the host needs no kmod)."""
    index = _module_index(kroot, kver)
    order: dict[str, Path] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order or name in trail:
            return
        path = index.get(name)
        if path is None:
            builtin = (kroot / "lib/modules" / kver / "modules.builtin").read_text()
            if f"/{name}.ko" in builtin.replace("-", "_"):
                return
            raise SystemExit(f"sctp_vm: kernel module {name} not found")
        for dep in _depends(_module_bytes(path)):
            visit(dep, trail + (name,))
        order[name] = path

    for mod in MODULES:
        visit(mod, ())
    return list(order.values())


def cpio_newc(root: Path) -> bytes:
    """A newc cpio archive of ``root`` (stdlib only; files, dirs and symlinks)."""
    out = bytearray()
    ino = 1

    def entry(name: str, mode: int, data: bytes, nlink: int = 1) -> None:
        nonlocal ino
        namez = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(namez), 0))
        ino += 1
        out.extend(hdr.encode() + namez)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(rel, st.st_mode, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(rel, st.st_mode, b"", 2)
        else:
            entry(rel, st.st_mode, path.read_bytes())
    entry("TRAILER!!!", 0, b"")
    return bytes(out)


def build_initramfs(kroot: Path, kver: str, dest: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise SystemExit("sctp_vm: busybox not found (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for sub in ("bin", "mods", "proc", "sys", "dev", "lower", "rw", "mnt"):
            (d / sub).mkdir()
        shutil.copy(busybox, d / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", d / "bin" / applet)
        order = []
        for mod in module_files(kroot, kver):
            name = mod.name.removesuffix(".xz")
            (d / "mods" / name).write_bytes(_module_bytes(mod))
            order.append(name)
        (d / "mods" / "order").write_text("\n".join(order) + "\n")
        (d / "init").write_text(INIT)
        (d / "init").chmod(0o755)
        tmp_out = dest.with_suffix(".tmp")
        tmp_out.write_bytes(gzip.compress(cpio_newc(d), compresslevel=1))
        tmp_out.replace(dest)


def prepare(cache: Path) -> tuple[Path, Path, Path]:
    """Build (or reuse) the cache; return (vmlinux, initramfs, kroot)."""
    cache.mkdir(parents=True, exist_ok=True)
    kroot, kver = fetch_kernel(cache)
    vmlinux = cache / "vmlinux"
    initrd = cache / "initramfs.cpio.gz"
    if not vmlinux.exists():
        extract_vmlinux(kroot, kver, vmlinux)
    if not initrd.exists():
        build_initramfs(kroot, kver, initrd)
    return vmlinux, initrd, kroot


def run_in_vm(command: list[str], workdir: Path, cache: Path, timeout_s: int = 900,
              mem_mb: int = 1024) -> int:
    """Boot the VM, run ``command`` (argv) in ``workdir``, return its exit status."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise SystemExit("sctp_vm: qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    vmlinux, initrd, kroot = prepare(cache)
    workdir = workdir.resolve()
    cmd_file = workdir / CMD_FILE
    rc_file = workdir / RC_FILE
    cmd_file.write_text(shlex.join(command) + "\n")
    rc_file.unlink(missing_ok=True)
    argv = [
        "timeout", str(timeout_s), qemu, "-accel", "tcg", "-cpu", "max", "-smp", "1",
        "-m", str(mem_mb), "-M", "pc", "-nodefaults", "-display", "none", "-serial", "stdio",
        "-no-reboot",
        "-fsdev", "local,id=r,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=r,mount_tag=hostroot",
        "-fsdev", f"local,id=w,path={workdir},security_model=none",
        "-device", "virtio-9p-pci,fsdev=w,mount_tag=work",
        "-kernel", str(vmlinux), "-initrd", str(initrd),
        "-append", f"console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off "
                   f"vm_work={workdir} vm_kroot={kroot}",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    noise = (b"SeaBIOS", b"Booting from ROM", b"[2J", b"[?7l")
    for raw in proc.stdout:
        line = raw.replace(b"\x1b", b"").replace(b"\r", b"")
        if any(line.startswith(n) for n in noise):
            continue
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
    qrc = proc.wait()
    try:
        rc = int(rc_file.read_text().strip())
    except (OSError, ValueError):
        rc = 124 if qrc == 124 else 125
        log("the VM returned no exit status" + (" (timeout)" if qrc == 124 else ""))
    cmd_file.unlink(missing_ok=True)
    rc_file.unlink(missing_ok=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("SCTP_VM_TIMEOUT", 900)))
    ap.add_argument("--mem", type=int, default=int(os.environ.get("SCTP_VM_MEM", 1024)))
    ap.add_argument("--workdir", type=Path, default=PROJECT)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "SCTP_VM_CACHE", PROJECT / ".vmcache")))
    ap.add_argument("--prepare", action="store_true", help="build the cache and exit")
    ap.add_argument("command", nargs="*", help="command to run in the VM (after --)")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.cache.resolve())
        return 0
    if not args.command:
        ap.error("give a command after --")
    return run_in_vm(args.command, args.workdir, args.cache.resolve(), args.timeout, args.mem)


if __name__ == "__main__":
    sys.exit(main())
