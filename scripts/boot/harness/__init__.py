"""The boot test's harness (Python standard library only), driven by
scripts/boot-test:

- proc:   running commands (each in its own process group, killed with the
          harness), logging, the errors that end a run;
- trees:  the cached Debian trees, handing them to the build user, the
          image builders (run as that user, with no capabilities);
- boot:   the ways of booting an image in qemu (direct kernel, UEFI through
          OVMF + GRUB, U-Boot) and qemu itself as a context manager;
- checks: what is looked at in a booted system, what each image is
          expected to show (as data), and the verdicts.
"""
