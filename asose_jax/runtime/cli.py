"""What the command-line entry points share: flags generated from config dataclasses, one-line flag errors and
the runtime flags.

A config field becomes a flag when it is declared with ``setting(default, "help text")``: the flag is
``--<field-with-hyphens>`` (or ``flag=``), its type comes from the annotation, its metavar from ``choices`` or the
type, and its help shows the default of the preset the CLI starts from. Nested config dataclasses (``RunConfig.search``)
contribute their flags too. Fields declared without help (computed ones, library-only ones) are not flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence

_METAVARS = {int: "N", float: "X", str: "NAME"}


def setting(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    metavar: str | None = None,
    choices: Sequence[str] = (),
    parse: Callable[[str], object] | None = None,
    default_factory=dataclasses.MISSING,
):
    """A dataclass field that the CLI exposes as a flag (see the module docstring); ``parse`` converts the flag's
    string when the annotation's type cannot (e.g. a tuple)."""
    metadata = {"help": help, "flag": flag, "aliases": tuple(aliases), "metavar": metavar, "choices": tuple(choices),
                "parse": parse}  # fmt: skip
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One generated flag: ``path`` is the field's dotted path (``search.sampler``)."""

    path: str
    names: tuple[str, ...]
    kind: type
    field: dataclasses.Field

    @property
    def dest(self) -> str:
        return self.path.replace(".", "__")


def config_flags(cls: type, prefix: str = "") -> Iterator[Flag]:
    """The flags of dataclass ``cls`` and of its nested config dataclasses, in field order."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = _plain_type(hints[field.name])
        if dataclasses.is_dataclass(kind):
            yield from config_flags(kind, f"{prefix}{field.name}.")
        elif field.metadata.get("help"):
            flag = field.metadata["flag"] or "--" + field.name.replace("_", "-")
            yield Flag(prefix + field.name, (flag, *field.metadata["aliases"]), kind, field)


def flag_names(cls: type) -> dict[str, str]:
    """``{field name: flag}`` for the fields whose flag is not ``--<field-with-hyphens>`` (e.g. ``op_names``)."""
    return {f.field.name: f.names[0] for f in config_flags(cls) if f.names[0] != "--" + f.field.name.replace("_", "-")}


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type, defaults, groups: Mapping[str, Sequence[str]]
) -> dict[str, argparse._ArgumentGroup]:
    """Adds a flag per ``setting`` of ``cls``, each to its group of ``groups`` (title -> field names, in the
    order shown by ``--help``); each defaults to None (not given), and its help shows the value in ``defaults``
    (an instance of ``cls``: the preset or recipe the command starts from). Returns the groups by title."""
    sections = {title: parser.add_argument_group(title) for title in groups}
    group_of = {name: sections[title] for title, names in groups.items() for name in names}
    for flag in config_flags(cls):
        if flag.field.name not in group_of:
            raise KeyError(f"the setting {flag.path} is in no group of --help; add it to one")
        meta, group = flag.field.metadata, group_of[flag.field.name]
        default = _lookup(defaults, flag.path)
        said = default is None and ("default" in meta["help"] or "unset" in meta["help"])  # it says what None means
        text = meta["help"] if said else f"{meta['help']} (default: {shown_default(default)})"
        if flag.kind is bool:
            group.add_argument(*flag.names, dest=flag.dest, action=argparse.BooleanOptionalAction, default=None,
                               help=text)  # fmt: skip
            continue
        choices = meta["choices"]
        metavar = meta["metavar"] or ("{" + ",".join(choices) + "}" if choices else _METAVARS.get(flag.kind, "VALUE"))
        kind = finite_float if flag.kind is float else flag.kind
        group.add_argument(*flag.names, dest=flag.dest, type=meta["parse"] or kind, default=None,
                           metavar=metavar, help=text)  # fmt: skip
    return sections


def shown_default(value) -> str:
    """A default as ``--help`` shows it: ``none`` for unset, on/off for switches, lists joined by commas."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def chosen(argv: Sequence[str] | None, flag: str, default: str | None) -> str | None:
    """The value of ``flag`` in ``argv`` (default: the command line) before the full parse, so that ``--help``
    can show the defaults of the preset or recipe it names."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument(flag)
    known, _ = early.parse_known_args(argv)
    return getattr(known, flag.lstrip("-").replace("-", "_")) or default


def finite_float(text: str) -> float:
    """The type of float flags: a number, and finite (``inf`` or ``nan`` would poison a run)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def given_settings(args: argparse.Namespace, cls: type) -> dict:
    """The flags given on the command line as ``{field: value}``, nested like ``cls`` (``{"search": {...}}``)."""
    given: dict = {}
    for flag in config_flags(cls):
        value = getattr(args, flag.dest)
        if value is not None:
            *parents, name = flag.path.split(".")
            node = given
            for parent in parents:
                node = node.setdefault(parent, {})
            node[name] = value
    return given


def _lookup(config, path: str):
    for name in path.split("."):
        config = getattr(config, name)
    return config


def _plain_type(hint) -> type:
    """``int | None`` -> ``int``; ``tuple[str, ...] | None`` -> ``tuple``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


class ArgumentParser(argparse.ArgumentParser):
    """Flag errors in one line (``error: ...``, exit status 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def add_run_directory_flags(parser: argparse.ArgumentParser, default_workdir: str, dry_run: str) -> None:
    """``--workdir``, ``--resume`` and ``--dry-run`` (which does ``dry_run`` instead of the run)."""
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help=f"run directory (default: {default_workdir}); one that holds an unfinished run continues it",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --workdir from its newest checkpoint"
    )
    parser.add_argument("--dry-run", action="store_true", help=f"{dry_run}, do not train")


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """``--distributed`` and ``--compilation-cache``."""
    parser.add_argument(
        "--distributed",
        default="auto",
        metavar="{auto,on,off}",
        help="multi-host runs, jax.distributed.initialize(): auto (on TPU pod slices with several hosts), "
        "on (always; JAX finds the cluster on Cloud TPU, SLURM and Open MPI), off (default: %(default)s)",
    )
    parser.add_argument(
        "--compilation-cache",
        default=str(pathlib.Path.home() / ".cache/asose_jax/xla"),
        metavar="DIR",
        help="persistent XLA compilation cache, so reruns skip compiling ('' disables; default: %(default)s)",
    )


def setup_runtime(args: argparse.Namespace) -> None:
    """Starts the distributed runtime if asked (before anything touches a device) and the compilation cache."""
    import jax  # imported here, after the cheap flag checks

    from asose_jax.runtime import parallel

    parallel.initialize(args.distributed)
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_command(work: Callable[[], dict]) -> dict | int:
    """Runs a command's ``work`` and returns its summary, or the exit status of a failure it reported in one
    line on stderr: 2 for bad input, a non-finite run and out of memory (``error: ...``), 128 + signal for a
    stop by SIGTERM or SIGINT (``stopped: ...``, with the command that resumes). Other errors keep their
    traceback: they are bugs."""
    from asose_jax.runtime.memory import failure_line  # imports jax: only once the flags are known to be good
    from asose_jax.runtime.rundir import Interrupted

    try:
        return work()
    except (ValueError, FloatingPointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    except (RuntimeError, MemoryError) as err:  # JAX's runtime errors (out of memory among them) are RuntimeErrors
        if (line := failure_line(err)) is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
