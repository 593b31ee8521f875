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
- The same user errors raised in background threads (orbax's async checkpoint
  save on a full disk, tensorstore's writers), logged with their traceback,
  or raised in an atexit callback (TensorBoard's writer flushing to a full
  disk) are not printed: the run still fails with the one line, naming the
  first such error even when the main thread saw none. So are JAX's warnings
  that a persistent compilation cache entry could not be written to that disk.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import traceback
import warnings

from absl import app, flags

flags.DEFINE_boolean("traceback", False,
                     "On an error, print the full Python traceback as well as the one-line message.")

# OSErrors of the user's files and folders (not bugs): permissions, missing paths,
# full or read-only disks, quotas.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC,
               errno.EROFS, errno.EDQUOT, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG}
# tensorstore reports an OS error as a ValueError whose text carries the errno.
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")
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
  if short == "__main__":  # a launcher run as a script file
    return os.path.splitext(os.path.basename(sys.argv[0]))[0] or "luce"
  return {"evaluate": "luce-eval"}.get(short, f"luce-{short}")


def one_line(text: str) -> str:
  """`text` on one line: whitespace runs (and escaped newlines and quotes of a
  repr'd message) collapsed, quotes around the whole dropped."""
  flat = " ".join(str(text).replace("\\n", " ").replace("\\'", "'").split())
  return flat[1:-1] if len(flat) > 1 and flat[0] == flat[-1] and flat[0] in "'\"" else flat


def _errno(err: BaseException) -> int | None:
  """The errno of an OSError, or of an OS error tensorstore wrapped in a ValueError."""
  if isinstance(err, OSError):
    return err.errno
  if isinstance(err, ValueError):
    found = _TENSORSTORE_ERRNO.search(str(err))
    return int(found.group(1)) if found else None
  return None


def _is_user_error(err: BaseException | None) -> bool:
  from luce.errors import LuceError
  if err is None:
    return False
  if isinstance(err, LuceError):
    return True
  return _errno(err) in USER_ERRNOS


def _background_user_error(err: BaseException | None) -> bool:
  """A user error, or an exception raised while handling one (orbax re-raises
  a failed commit as a new error from its except block)."""
  seen = 0
  while err is not None and seen < 8:
    if _is_user_error(err):
      return True
    err, seen = err.__cause__ or err.__context__, seen + 1
  return False


def _describe(err: BaseException) -> str:
  from luce.errors import LuceError
  code = _errno(err)
  if isinstance(err, LuceError) or code is None:
    return one_line(str(err))
  where = f" {err.filename}" if isinstance(err, OSError) and err.filename else ""
  fix = {errno.ENOSPC: " (the disk is full: free space or pass another --workdir)",
         errno.EDQUOT: " (disk quota exceeded: free space or pass another --workdir)",
         errno.EROFS: " (a read-only file system: pass a writable --workdir)",
         errno.EACCES: " (no permission: pass a folder you can write, e.g. under /tmp)",
         errno.EPERM: " (no permission: pass a folder you can write, e.g. under /tmp)",
         errno.EFBIG: " (a file outgrew the size limit: raise `ulimit -f` or pass another --workdir)"}
  return f"{os.strerror(code)}{':' + where if where else ''}{fix.get(code, '')}"


def _kind(err: BaseException) -> str:
  """The error's type, OSError for an OS error tensorstore wrapped in a ValueError."""
  from luce.errors import LuceError
  return "OSError" if not isinstance(err, (LuceError, OSError)) and _errno(err) else type(err).__name__


def _show_traceback() -> bool:
  return (flags.FLAGS.traceback if flags.FLAGS.is_parsed() else
          any(a in ("--traceback", "--traceback=true") for a in sys.argv[1:]))


# User errors raised where the main thread may never see them (first one first).
_BACKGROUND: list[BaseException] = []
# Set once the one-line error is printed: what threads and atexit callbacks
# raise after it (a writer thread finding its file closed) is its consequence.
_FAILED: list[bool] = []
_RUNNING: list[bool] = []   # set while the launcher's main runs
_HELD: list[tuple] = []     # background errors held back meanwhile (_print_held)
_HELD_WARNINGS: list[tuple] = []  # JAX's cache-write warnings held back meanwhile


class _QuietUserErrors(logging.Filter):
  """Drops log records that carry a user error's traceback (orbax logs its
  failed background commit with the traceback before re-raising it)."""

  def filter(self, record: logging.LogRecord) -> bool:
    err = record.exc_info[1] if record.exc_info else None
    if _background_user_error(err) and not _show_traceback():
      _BACKGROUND.append(err)
      return False
    return True


def _quiet_background_errors() -> None:
  """Route user errors from threads, log records and atexit callbacks to
  `_BACKGROUND` instead of printing their tracebacks (module docstring)."""
  thread_hook, unraisable_hook, except_hook = threading.excepthook, sys.unraisablehook, sys.excepthook

  def on_thread_error(args):
    if _FAILED and not _show_traceback():
      return
    if _background_user_error(args.exc_value) and not _show_traceback():
      _BACKGROUND.append(args.exc_value)
      return
    thread_hook(args)

  def on_unraisable(args):
    if _FAILED and not _show_traceback():
      return
    if _background_user_error(args.exc_value) and not _show_traceback():
      _BACKGROUND.append(args.exc_value)
      return
    unraisable_hook(args)

  def on_printed_error(kind, value, tb):
    if _show_traceback() or not _RUNNING:
      except_hook(kind, value, tb)
    elif not _FAILED:
      _HELD.append((kind, value, tb))

  threading.excepthook, sys.unraisablehook = on_thread_error, on_unraisable
  sys.excepthook = on_printed_error
  _hold_closed_loop_callbacks()
  _hold_disk_warnings()
  quiet = _QuietUserErrors()
  from absl import logging as absl_logging
  for handler in {absl_logging.get_absl_handler(), *logging.getLogger().handlers}:
    handler.addFilter(quiet)


def _hold_closed_loop_callbacks() -> None:
  """After a failed background write, tensorstore's C++ callbacks schedule
  work on the closed event loop of the save that failed, and print each
  RuntimeError('Event loop is closed') themselves, sometimes before orbax
  reports the write's error. While a launcher runs, such a call is held back
  (the loop would never run it): dropped if a user error explains it, printed
  at the end if not."""
  import asyncio.base_events as base_events
  original = base_events.BaseEventLoop.call_soon_threadsafe
  if getattr(original, "_luce_holds", False):
    return

  def call_soon_threadsafe(loop, callback, *args, **kwargs):
    try:
      return original(loop, callback, *args, **kwargs)
    except RuntimeError as err:
      if not (_RUNNING and loop.is_closed()) or _show_traceback():
        raise
      _HELD.append((type(err), err, err.__traceback__))
      return None

  call_soon_threadsafe._luce_holds = True
  base_events.BaseEventLoop.call_soon_threadsafe = call_soon_threadsafe


def _root_user_error(err: BaseException) -> BaseException:
  """The user error itself of a chain `_background_user_error` accepted."""
  while err is not None and not _is_user_error(err):
    err = err.__cause__ or err.__context__
  return err


def _print_held() -> None:
  """Print what was held back (`_quiet_background_errors`), when no user error
  explains it."""
  while _HELD_WARNINGS:
    warnings.showwarning(*_HELD_WARNINGS.pop(0))
  while _HELD:
    sys.__excepthook__(*_HELD.pop(0))


def _disk_warning(message) -> bool:
  """A warning that JAX could not write a persistent compilation cache entry
  because of the user's disk (full, over `ulimit -f`, read-only, no permission)."""
  text = str(message)
  return ("persistent compilation cache" in text
          and any(os.strerror(code) in text for code in USER_ERRNOS))


def _hold_disk_warnings() -> None:
  """While a launcher runs, JAX's warnings that a compilation cache entry could
  not be written (one per compiled function, two lines each) are held back: a
  disk error that ends the run explains them; otherwise they print at the end."""
  if getattr(warnings.showwarning, "_luce_holds", False):
    return
  original = warnings.showwarning

  def showwarning(message, category, filename, lineno, file=None, line=None):
    if _RUNNING and not _show_traceback() and _disk_warning(message):
      _HELD_WARNINGS.append((message, category, filename, lineno, file, line))
      return
    original(message, category, filename, lineno, file, line)

  showwarning._luce_holds = True
  warnings.showwarning = showwarning


def _fail(kind: str, message: str, err: BaseException) -> None:
  if _errno(err) is None:   # not a disk error: it does not explain held cache warnings
    while _HELD_WARNINGS:
      warnings.showwarning(*_HELD_WARNINGS.pop(0))
  _HELD_WARNINGS.clear()
  if _show_traceback():
    traceback.print_exception(err)
  print(f"{program()}: {kind}: {message}", file=sys.stderr)
  sys.stderr.flush()
  _FAILED.append(True)
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
    _quiet_background_errors()
    _RUNNING.append(True)
    try:
      result = main(argv)
    except Exception as err:
      if not _background_user_error(err):  # bugs and app.UsageError keep absl's handling
        _print_held()
        raise
      err = _root_user_error(err)
      _fail(_kind(err), _describe(err), err)
    finally:
      _RUNNING.clear()
    if _BACKGROUND:  # the main thread finished, but a background write failed
      err = _root_user_error(_BACKGROUND[0])
      _fail(_kind(err), _describe(err) + " (in a background write)", err)
    _print_held()
    return result

  app.run(guarded, flags_parser=_parse_flags)
