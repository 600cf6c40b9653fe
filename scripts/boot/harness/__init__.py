"""The boot test's harness (Python standard library only), driven by
scripts/boot-test:

- proc:   running commands (each in its own process group, killed with the
          harness), logging, the errors that end a run;
- trees:  the cached Debian trees, handing them to the build user, the
          image builders (run as that user, with no capabilities);
- boot:   the ways of booting an image in qemu (direct kernel, UEFI through
          OVMF + GRUB, U-Boot) and qemu itself as a context manager;
- checks: what is looked at in a booted system, what each image is
          expected to show (as data), and the verdicts;
- arm64:  --arch arm64: the arm64 tree (mmdebstrap through binfmt) and
          its boots in qemu-system-aarch64 (U-Boot, UEFI, direct);
- initrd: the arm64 boots' initrd, made on the host (busybox and the
          root's modules, scripts/boot/initrd/init).
"""
