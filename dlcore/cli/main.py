"""`python -m dlcore train|bench|baseline|runs`: the engine from a terminal.

Every config field has a flag, generated from the dataclasses so nothing re-describes them. Bad
flags, bad values and unreadable folders end with exit status 2 and one clear line; a run that
fails (out of memory included) with exit status 1 and one line; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dlcore.engine.config import PRESETS, SECTIONS, ConfigError, RunConfig, setting, settings
from dlcore.text import MAX_NAME_CHARS, check_name

PROG = "python -m dlcore"


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def error_line(message: str) -> None:
    """The one line on stderr that every failure of every subcommand ends with."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line instead of usage + message
        command = self.prog.removeprefix(PROG).strip()
        error_line(f"{command}: {message}" if command else message)
        sys.exit(2)


def _int_tuple(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "-"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (dlcore.engine.config.settings()), e.g. --hidden 512,256 --lr 0.001
    --no-normalize; the setting's label and help say what it is. Values are checked by the
    config's validation, so a bad one names the field."""
    groups = {section: parser.add_argument_group(f"{section} settings") for section in SECTIONS}
    for key, s in settings().items():
        section, name = key.split(".", 1)
        flag, group = "--" + name.replace("_", "-"), groups[section]
        about = f"{s.label}{': ' + s.help if s.help else ''}"
        if isinstance(s.default, bool):
            group.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{about}; default {s.default}")
        elif s.layers is not None or isinstance(s.default, tuple):
            group.add_argument(flag, dest=key, type=_int_tuple, default=None,
                               help=f"{about}: comma-separated, e.g. 512,256 ('none' for no layers)")
        else:
            kind = type(s.default) if s.default is not None else str
            group.add_argument(flag, dest=key, type=kind, default=None,
                               help=f"{about}; default {s.default}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base = PRESETS[args.preset]
    known = settings()
    changes = {k: v for k, v in vars(args).items() if k in known and v is not None}
    return base.replace(**changes).validate()


def build_parser() -> argparse.ArgumentParser:
    from dlcore.cli import baseline as cli_baseline
    from dlcore.cli import runs as cli_runs

    parser = _Parser(prog=PROG, description="DL Lab engine, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a network and print its epochs")
    train.add_argument("--preset", choices=sorted(PRESETS), default="seed")
    train.add_argument("--data-dir", help="a folder holding the dataset's files")
    train.add_argument("--json", action="store_true", help="print the result as one JSON object")
    train.add_argument("--no-record", action="store_true", help="do not keep the run in the history")
    train.add_argument("--name", help="a display name for the run in the history (one line, at most "
                                      f"{MAX_NAME_CHARS} characters)")
    add_config_flags(train)
    train.set_defaults(func=_train)

    bench = sub.add_parser("bench", help="the lesson's DataLoader loop against the engine")
    bench.add_argument("--data-dir", help="a folder holding MNIST's files")
    bench.add_argument("--dataset", default="mnist")
    bench.add_argument("--device", default="auto", choices=setting("train.device").options)
    bench.add_argument("--epochs", type=int, default=1)
    bench.add_argument("--skip-seed-loop", action="store_true",
                       help="time only the engine (no ratio)")
    bench.set_defaults(func=_bench)

    cli_baseline.register(sub)
    cli_runs.register(sub)
    return parser


def load_for_cli(name: str, data_dir: str | None):
    """The dataset a command asked for; without a folder, the bundled sample when it is missing."""
    from dlcore.engine.data import CLI_FALLBACK_HINT, load_dataset, load_with_fallback
    from dlcore.engine.dataset import DatasetError

    try:
        if data_dir:
            return load_dataset(name, data_dir)
        dataset, note = load_with_fallback(name)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    if note:
        print(f"{note} {CLI_FALLBACK_HINT}", file=sys.stderr)
    return dataset


def open_store(record: bool):
    """The run history, opened before anything slow so that a folder it cannot use fails at once
    (CliError); None with `record` False."""
    from dlcore.runs.store import RunStore, StoreError

    if not record:
        return None
    try:
        store = RunStore()
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if store.notice:
        print(store.notice, file=sys.stderr)
    return store


@contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """While inside: the first Ctrl-C sets `stop` (the run ends after its step, as stopped, its
    finished epochs kept), a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def first_interrupt(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)
    signal.signal(signal.SIGINT, first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _train(args: argparse.Namespace) -> int:
    from dlcore.engine.train import EpochEnd
    from dlcore.runs.recording import train_recorded

    try:
        name = check_name(args.name) or None
    except ValueError as exc:
        raise CliError(f"--name: {exc}") from None
    config = config_from_args(args)
    store = open_store(not args.no_record)
    dataset = load_for_cli(config.train.dataset, args.data_dir)
    config = config.replace(**{"train.dataset": dataset.name})
    from dlcore.engine.devices import describe_device
    from dlcore.engine.models import build_model, count_params

    params = count_params(build_model(config.model, dataset.shape, dataset.num_classes))
    if not args.json:
        print(f"Parameters: {params:,}")
        print(f"Dataset: {dataset.name} ({dataset.source}); device: "
              f"{describe_device(config.train.device)}")

    def show(event: Any) -> None:
        if isinstance(event, EpochEnd) and not args.json:
            m = event.metrics
            print(f"Epoch {m.epoch}: Train Acc: {m.train_acc:.2%}, Test Acc: {m.test_acc:.2%}",
                  flush=True)

    stop = threading.Event()
    with stop_on_interrupt(stop):
        result, run_id = train_recorded(config, dataset, store=store, on_event=show, name=name,
                                        stop=stop)
    if args.json:
        print(json.dumps({
            "status": result.status, "run_id": run_id, "dataset": dataset.name,
            "device": result.device, "params": result.params, "config": config.to_dict(),
            "history": [m.as_dict() for m in result.history], **result.final_metrics(),
            "diverged_step": result.diverged_step, "message": result.message,
            "seconds": round(result.seconds, 3), "cuda_graph": result.cuda_graph,
        }))
    else:
        if result.message:
            print(result.message)
        final = result.final
        summary = f"Status: {result.status}"
        if final is not None:
            summary += f"; test accuracy {final.test_acc:.2%}"
        if run_id is not None:
            summary += f"; recorded as run {run_id}"
        print(summary)
    if stop.is_set():
        kept = f"; run {run_id} is recorded as stopped" if run_id is not None else ""
        error_line(f"interrupted after {len(result.history)} finished epoch(s){kept}")
        return 1
    return 0 if result.status in ("finished", "stopped") else 1


def _bench(args: argparse.Namespace) -> int:
    from dlcore.cli.bench import run_bench

    if args.epochs < 1:
        raise CliError(f"--epochs: {args.epochs} is out of range; allowed 1 or more")
    dataset = load_for_cli(args.dataset, args.data_dir)
    if dataset.shape != (1, 28, 28):
        raise CliError(f"bench needs 28x28 grey images like MNIST; {dataset.name} has {dataset.shape}")
    run_bench(dataset, device=args.device, epochs=args.epochs, include_seed_loop=not args.skip_seed_loop)
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's way of saying the same (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends with one line on stderr, never a traceback: exit status
    2 for bad input (flags, values, data or a home folder that cannot be read), 1 for a run that
    failed (out of memory, a file that cannot be written, an interrupt, anything unexpected;
    DLLAB_TRACEBACK=1 shows the traceback of the unexpected)."""
    try:
        args = build_parser().parse_args(argv)
        return _run(args)
    except KeyboardInterrupt:
        error_line("interrupted")
        return 1


def _run(args: argparse.Namespace) -> int:
    from dlcore.engine.dataset import DatasetError

    try:
        return args.func(args)
    except (CliError, ConfigError, DatasetError) as exc:
        error_line(_one_line(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - the README promises one line, not a traceback
        if _out_of_memory(exc):
            detail = f" ({_one_line(exc)})" if str(exc).strip() else ""
            error_line(f"out of memory{detail}; try a smaller batch size, network or training "
                       "subset")
        elif isinstance(exc, OSError):
            error_line(_one_line(exc))
        elif os.environ.get("DLLAB_TRACEBACK") == "1":
            raise
        else:
            error_line(f"{type(exc).__name__}: {_one_line(exc)}")
        return 1
