"""What every luce launcher shares: a --help that lists its flags, and one-line errors.

`launch(main, module)` replaces `absl.app.run(main)` in each launcher's `run()`
(the console-script entry point):

- absl's --help prints the docstring of `__main__` and the flags of the module
  named by argv[0]. Under a console script both are the generated wrapper's,
  so --help printed only "USAGE: ... [flags]". `launch` gives the wrapper the
  launcher's docstring (what it does, examples) and its flags.
- A user error prints one line, `luce-NAME: ErrorType: message`, and exits
  with status 2. A user error is a `LuceError` (bad config, data, input,
  checkpoint), a flag or config override that does not parse (a typo such as
  `--config.train.num_step=5`, a config file that does not exist), or an
  OSError of the user's files (a folder that cannot be created or written, a
  full disk). `--traceback` prints the full traceback as well. Anything else
  is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

from absl import app, flags

flags.DEFINE_boolean("traceback", False,
                     "On an error, print the full Python traceback as well as the one-line message.")

# OSErrors of the user's files and folders (not bugs): permissions, missing paths,
# full or read-only disks, quotas.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC,
               errno.EROFS, errno.EDQUOT, errno.EEXIST, errno.ENAMETOOLONG}
EXIT_USER_ERROR = 2


_PROGRAM: list[str] = []


def program() -> str:
  """The console script's name (also under `python -m luce.launchers.NAME`)."""
  if _PROGRAM:
    return _PROGRAM[0]
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "luce"


def script_name(module) -> str:
  """luce-NAME of a launcher module (luce.launchers.evaluate is luce-eval)."""
  spec = getattr(module, "__spec__", None)
  short = (spec.name if spec is not None else module.__name__).rsplit(".", 1)[-1]
  return {"evaluate": "luce-eval"}.get(short, f"luce-{short}")


def one_line(text: str) -> str:
  """`text` on one line: whitespace runs (and escaped newlines and quotes of a
  repr'd message) collapsed, quotes around the whole dropped."""
  flat = " ".join(str(text).replace("\\n", " ").replace("\\'", "'").split())
  return flat[1:-1] if len(flat) > 1 and flat[0] == flat[-1] and flat[0] in "'\"" else flat


def _is_user_error(err: BaseException) -> bool:
  from luce.errors import LuceError
  if isinstance(err, LuceError):
    return True
  return isinstance(err, OSError) and err.errno in USER_ERRNOS


def _describe(err: BaseException) -> str:
  from luce.errors import LuceError
  if isinstance(err, LuceError) or not isinstance(err, OSError) or err.errno is None:
    return one_line(str(err))
  where = f" {err.filename}" if err.filename else ""
  fix = {errno.ENOSPC: " (the disk is full: free space or pass another --workdir)",
         errno.EDQUOT: " (disk quota exceeded: free space or pass another --workdir)",
         errno.EROFS: " (a read-only file system: pass a writable --workdir)",
         errno.EACCES: " (no permission: pass a folder you can write, e.g. under /tmp)",
         errno.EPERM: " (no permission: pass a folder you can write, e.g. under /tmp)"}
  return f"{os.strerror(err.errno)}:{where}{fix.get(err.errno, '')}"


def _fail(kind: str, message: str, err: BaseException) -> None:
  show = (flags.FLAGS.traceback if flags.FLAGS.is_parsed() else
          any(a in ("--traceback", "--traceback=true") for a in sys.argv[1:]))
  if show:
    traceback.print_exception(err)
  print(f"{program()}: {kind}: {message}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


HELP = ("--help", "-help", "-h", "-?", "--helpshort")


def _parse_flags(argv):
  """absl's flag parsing with every parse failure as a one-line usage error;
  --help prints the launcher's docstring and flags and exits 0."""
  ours = argv[1:argv.index("--")] if "--" in argv else argv[1:]   # after --: the benchmark's
  if any(arg in HELP for arg in ours):
    app.usage(shorthelp=True, writeto_stdout=True)
    print("\n--helpfull lists absl's own flags too.")
    sys.exit(0)
  try:
    rest = flags.FLAGS(argv)
    # ml_collections defers a config file's load error to the first use of the
    # config: touch each config value here so it surfaces as a flag error.
    for name in (n for n in flags.FLAGS if n == "config" or n.endswith("_config")):
      getattr(flags.FLAGS[name].value, "items", None)
    return rest
  except flags.Error as err:
    _fail("bad flag", one_line(str(err)), err)
  except (AttributeError, KeyError, TypeError, ValueError, OSError) as err:
    # ml_collections raises these for an unknown field, a bad value or an
    # unreadable config file while it applies --config and --config.x=... .
    _fail("bad flag", _flag_message(err), err)


def _flag_message(err: BaseException) -> str:
  text = one_line(str(err))
  if isinstance(err, AttributeError) and "Did you mean" in text:
    return f"no such config field {text} (fields: the config file, or luce.train.base_config())"
  if "No such file or directory" in text or isinstance(err, OSError):
    # ml_collections lists every path it tried; the last line names the file.
    last = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"cannot read the config: {last[-1] if last else text}"
  return text


def adopt_flags(module_name: str) -> None:
  """Make `module_name`'s flags (and --traceback) the key flags of argv[0], the
  module absl's --help lists."""
  fv = flags.FLAGS
  target = sys.argv[0]
  for name in (module_name, __name__):
    for flag in fv.get_key_flags_for_module(name):
      fv.register_key_flag_for_module(target, flag)


def launch(main, module_name: str) -> None:
  """Run `main(argv)` as absl's app.run does, with the launcher's --help and
  one-line user errors (module docstring)."""
  module = sys.modules[module_name]
  _PROGRAM[:] = [script_name(module)]
  main_module = sys.modules["__main__"]
  if main_module is not module:
    main_module.__doc__ = module.__doc__
  adopt_flags(module_name)

  def guarded(argv):
    try:
      return main(argv)
    except Exception as err:
      if not _is_user_error(err):  # bugs and app.UsageError keep absl's handling
        raise
      _fail(type(err).__name__, _describe(err), err)

  app.run(guarded, flags_parser=_parse_flags)
