"""The ``llmlab`` command: ``prepare``, ``train``, ``generate``, ``finetune``, ``export``, ``info``, ``doctor``,
``progress``.

    llmlab train                                  # prepares the embedded corpus if needed, trains cpu_small
    llmlab generate --prompt "ROMEO:"             # samples from out/best_checkpoint.bin
    llmlab prepare --tokenizer gpt2 --out data/shakespeare_gpt2
    llmlab train --preset cpu_small --set embedding_size=256 --set max_iters=3000
    llmlab train --resume                         # continues from out/last_checkpoint.bin
    llmlab info out/best_checkpoint.bin
    llmlab doctor                                 # a CUDA GPU checked end to end (make gpu-check)
    llmlab progress                               # which practice pieces pass (llmlab.check)

Every expected failure (bad setting, missing or damaged file, diverged run, a step too large for the
memory, an unwritable folder) prints one ``error:`` line and exits with status 1; argparse usage errors exit
with 2. Ctrl-C or SIGTERM during ``train`` saves the step it stopped at and prints the command that
continues it (exit status 130 / 143).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmlab.checkpoint_state import BEST_NAME, LAST_NAME
from llmlab.cli_args import DEFAULT_CHECKPOINT, DEFAULT_LAST, build_parser, parse_overrides
from llmlab.config import DEFAULT_PRESET, Config, get_preset
from llmlab.i18n import tr

if TYPE_CHECKING:
    from llmlab.checkpoint_state import TrainingState
    from llmlab.failures import TrainingInterrupted

__all__ = ["main"]


def _checkpoint(given: str | None) -> str:
    """The checkpoint a command reads: the one given, else out/best_checkpoint.bin, else (before the first
    evaluation has written a best one, e.g. after an early Ctrl-C) out/last_checkpoint.bin, with a note."""
    if given is not None:
        return given
    if not Path(DEFAULT_CHECKPOINT).exists() and Path(DEFAULT_LAST).is_file():
        print(
            f"note: {DEFAULT_CHECKPOINT} does not exist yet (the first evaluation after step 0 writes it); "
            f"using {DEFAULT_LAST}.",
            file=sys.stderr,
        )
        return DEFAULT_LAST
    return DEFAULT_CHECKPOINT


def _vocab_flag(vocab_size: int | None) -> str:
    """`` --vocab-size N`` where the BPE is not the default size, else nothing."""
    from llmlab.bpe import non_default_size

    size = non_default_size(vocab_size)
    return f" --vocab-size {size}" if size else ""


def _cmd_prepare(args: argparse.Namespace) -> int:
    from llmlab import data

    out = Path(args.out) if args.out else data.default_data_dir(args.source, args.tokenizer, args.vocab_size)
    # prepare() reports progress and prints the summary line itself.
    data.prepare(
        source=args.source,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        out_dir=out,
        num_proc=args.num_proc,
        val_fraction=args.val_fraction,
        split=args.split,
        force=args.force,
    )
    return 0


def _train_config(args: argparse.Namespace) -> tuple[Config, TrainingState | None, str]:
    """The run's configuration, with --resume the checkpoint it continues from (loaded once, here), and a
    note when a warm-up that does not fit a shorter max_iters was scaled down."""
    overrides = parse_overrides(args.overrides)
    if args.overwrite and (args.resume or args.resume_from):
        raise ValueError(
            "--overwrite and --resume contradict each other: --resume continues the run in --out, --overwrite "
            "replaces it; choose one."
        )
    state = None
    if args.resume_from:
        from llmlab.checkpoint import load_training_state

        fix = "Pass another checkpoint to --resume-from, or start a fresh run with --overwrite."
        state = load_training_state(args.resume_from, fix=fix)
    elif args.resume:
        from llmlab.checkpoint import load_resume_state

        state = load_resume_state(args.out)  # says how to start fresh when there is nothing to resume
    if state is not None and args.preset is None:
        # Resuming: the run's own settings, then any --set on top (e.g. a larger max_iters).
        config = Config.from_dict(state.config)
    else:
        config = get_preset(args.preset or DEFAULT_PRESET)
    overrides, note = _fit_warmup(config, overrides)
    return config.override(overrides), state, note


def _fit_warmup(config: Config, overrides: dict[str, str]) -> tuple[dict[str, str], str]:
    """``--set max_iters=20`` alone is a smoke run: a preset warm-up longer than that is scaled down (and said).

    Only a contradiction the user wrote (both max_iters and warmup_iters) is refused."""
    if "max_iters" not in overrides or "warmup_iters" in overrides:
        return overrides, ""
    max_iters = config.override({**overrides, "warmup_iters": 0}).train.max_iters
    warmup = config.train.warmup_iters
    if warmup <= max_iters:
        return overrides, ""
    scaled = max_iters // 10
    note = (
        f"note: warmup_iters={warmup} does not fit max_iters={max_iters}: using warmup_iters={scaled} "
        f"(a tenth); --set warmup_iters=N chooses another."
    )
    return {**overrides, "warmup_iters": str(scaled)}, note


def _resume_command(args: argparse.Namespace, data_dir: Path) -> str:
    """The command that continues this run: the same arguments, with --resume."""
    cmd = ["llmlab", "train", "--data", str(data_dir), "--out", str(args.out)]
    if args.preset:
        cmd += ["--preset", args.preset]
    for item in args.overrides:
        cmd += ["--set", item]
    if args.metrics:
        cmd += ["--metrics", args.metrics]
    if args.threads != "auto":
        cmd += ["--threads", str(args.threads)]
    if args.quiet:
        cmd.append("--quiet")
    return shlex.join([*cmd, "--resume"])


def _interrupted_line(stop: TrainingInterrupted, args: argparse.Namespace, data_dir: Path) -> str:
    """One line: where the run stopped, what was saved, and the exact command that continues it."""
    how = f" ({stop.signal_name})" if stop.signal_name else ""
    resume = tr("cli.continue_with", command=_resume_command(args, data_dir))
    if stop.checkpoint is not None:
        best = Path(args.out) / BEST_NAME
        sample = (
            tr("cli.best_so_far", path=best)
            if best.is_file()
            else tr("cli.no_best_yet", best=best.name, last=stop.checkpoint.name)
        )
        return tr("cli.interrupted", how=how, step=stop.step, path=stop.checkpoint, sample=sample, resume=resume)
    last = Path(args.out) / LAST_NAME
    return f"{stop}" + (resume if last.exists() else "")


def _cmd_train(args: argparse.Namespace) -> int:
    from llmlab import runtime
    from llmlab.callbacks import MetricsLogger, ProgressBar
    from llmlab.failures import TrainingInterrupted
    from llmlab.train import Trainer

    config, state, note = _train_config(args)
    main_rank = runtime.dist_from_env().is_main
    if note and main_rank:
        print(note, file=sys.stderr)
    if args.data is None:
        from llmlab.data import default_data_dir

        # No --data: the embedded corpus, prepared with the preset's tokenizer where `llmlab prepare` puts it
        # (a BPE trained to the preset's vocab_size: cpu_small's 1,024 tokens, cpu_modern's 4,096).
        tokenizer = config.train.tokenizer
        vocab_size = config.model.vocab_size if tokenizer == "bpe" else None
        data_dir = default_data_dir(None, tokenizer, vocab_size)
        if not (data_dir / "meta.json").exists() or not (data_dir / "train.bin").exists():
            from llmlab import data

            if runtime.dist_from_env().world_size > 1:
                # Every torchrun process would prepare the same files at once: do it once, beforehand.
                raise FileNotFoundError(
                    f"no prepared data in {data_dir}; under torchrun prepare it first: "
                    f"llmlab prepare --tokenizer {tokenizer}{_vocab_flag(vocab_size)} --out {data_dir}"
                )

            size = f", {vocab_size:,} tokens" if vocab_size is not None else ""
            print(
                f"preparing the embedded Shakespeare corpus ({tokenizer} tokenizer{size}) in {data_dir} ...",
                file=sys.stderr,
            )
            data.prepare(tokenizer=tokenizer, out_dir=data_dir, vocab_size=vocab_size)
    else:
        data_dir = Path(args.data)
    out = Path(args.out)
    metrics = Path(args.metrics) if args.metrics else out / "metrics.csv"
    callbacks = [MetricsLogger(metrics)]
    if not args.quiet:
        callbacks.insert(0, ProgressBar())
    threads: int | str = args.threads
    if threads != "auto":
        try:
            threads = int(threads)
        except ValueError:
            raise ValueError(f"--threads={args.threads!r} is not valid: use auto or a whole number, e.g. 2.") from None
    # Process-wide and irreversible, so only here, in the command's own process (never in a notebook kernel):
    # fewer page faults per CPU step (llmlab.runtime says why).
    runtime.tune_cpu_allocator()
    trainer = Trainer(
        config,
        data_dir,
        out,
        callbacks=callbacks,
        resume=state if state is not None else False,
        cpu_threads=threads,
        overwrite=args.overwrite,
    )
    if trainer.dist.is_main:
        tc = trainer.config.train
        first = min((trainer.start_iter // tc.eval_interval + 1) * tc.eval_interval, tc.max_iters)
        print(
            f"checkpoints go to {out}/: last_checkpoint.bin at every evaluation (every {tc.eval_interval} steps), "
            f"best_checkpoint.bin when the validation loss improves; the first at step {first}. "
            f"Ctrl-C saves the step it stops at.",
            file=sys.stderr,
        )
    try:
        result = trainer.fit()
    except TrainingInterrupted as stop:
        if trainer.dist.is_main:
            print(_interrupted_line(stop, args, data_dir), file=sys.stderr)
        return 143 if stop.signal_name == "SIGTERM" else 130
    if trainer.dist.is_main:
        # Throughput is measured between log lines; a run shorter than log_interval has none to report.
        speed = (
            f"{result.tokens_per_sec:,.0f} tokens/s"
            if result.tokens_per_sec > 0
            else f"tokens/s not measured (fewer steps than log_interval={trainer.config.train.log_interval})"
        )
        print(
            f"done: {result.final_step} steps in {result.seconds:.0f} s ({result.stop_reason}), "
            f"best val {result.best_val_loss:.4f} nats/token = {result.best_val_bpb:.3f} bits/byte, {speed}."
        )
        if result.best_checkpoint:
            print(
                f"best checkpoint: {result.best_checkpoint}\n"
                f'try: llmlab generate --checkpoint {result.best_checkpoint} --prompt "ROMEO:"'
            )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from llmlab.checkpoint import model_from_checkpoint
    from llmlab.runtime import select_device

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens} must be at least 1.")
    if args.temperature < 0:
        raise ValueError(f"--temperature={args.temperature} must be >= 0 (0 = greedy, 0.8 is a good start).")
    if args.prompt_text is not None and args.prompt is not None:
        raise ValueError("give the prompt once: as the first argument or with --prompt, not both.")
    args.prompt = args.prompt_text if args.prompt_text is not None else (args.prompt or "")
    args.checkpoint = _checkpoint(args.checkpoint)
    device = select_device(args.device)
    model, tokenizer, _ = model_from_checkpoint(args.checkpoint, device)
    if args.speaker is not None or args.context is not None:
        return _reply(args, model, tokenizer)
    _check_prompt(args.prompt, tokenizer)
    if args.seed is not None:
        torch.manual_seed(args.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(args.seed)
    text = model.generate_sentence(
        args.prompt,
        model.config.block_size,
        args.max_new_tokens,
        tokenizer,
        device,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    print(text)
    return 0


def _reply(args: argparse.Namespace, model: object, tokenizer: object) -> int:
    """``generate --speaker S --context C`` on a fine-tuned (chat) checkpoint: print the reply."""
    import torch

    from llmlab.finetune import reply
    from llmlab.tokenizers import ChatTokenizer

    if not isinstance(tokenizer, ChatTokenizer):
        raise ValueError(
            f"--speaker/--context need a fine-tuned checkpoint (llmlab finetune), but {args.checkpoint} holds a "
            f"plain {tokenizer.name!r} model: give it a --prompt to continue instead."  # type: ignore[attr-defined]
        )
    if not args.speaker or args.context is None:
        raise ValueError("give both --speaker (e.g. 'Oph.') and --context (the speech to reply to).")
    for text in (args.speaker, args.context):
        _check_prompt(text, tokenizer)
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)  # type: ignore[attr-defined]
    print(
        reply(
            model,
            tokenizer,
            args.speaker,
            args.context,
            args.max_new_tokens,
            args.temperature,  # type: ignore[arg-type]
            args.top_k,
            generator=generator,
        )
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from llmlab import runtime
    from llmlab.callbacks import MetricsLogger, ProgressBar
    from llmlab.finetune import finetune

    out = Path(args.out)
    callbacks = [MetricsLogger(out / "metrics.csv")]
    if not args.quiet:
        callbacks.insert(0, ProgressBar())
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: choose one.")
    runtime.tune_cpu_allocator()  # as in `llmlab train`: the command's own process only
    data = args.data or "the dialogue of the embedded plays"
    print(
        f"fine-tuning {args.checkpoint} on {data} for {args.max_iters} steps at max_lr {args.max_lr:g} into {out} "
        f"(a few minutes on a laptop CPU; --max-iters N shortens it, Ctrl-C stops and saves; llmlab finetune --help)",
        file=sys.stderr,
    )
    done = finetune(
        args.checkpoint,
        out,
        data=args.data,
        max_iters=args.max_iters,
        max_lr=args.max_lr,
        callbacks=callbacks,
        resume=args.resume,
        overrides=parse_overrides(args.overrides),
        mask_prompt=not args.no_mask,
        overwrite=args.overwrite,
    )
    print(
        f"held-out replies: {done.reply_bpb_before:.3f} -> {done.reply_bpb_after:.3f} bits/byte "
        f"(lower is better); checkpoints in {out}\n"
        f"try: llmlab generate --checkpoint {out / 'best_checkpoint.bin'} "
        f'--speaker "Oph." --context "Do you doubt that?"'
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from llmlab.export import export_pretrained

    folder = export_pretrained(_checkpoint(args.checkpoint), args.out, overwrite=args.overwrite)
    print(f"wrote {folder}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r})")
    return 0


def _check_prompt(prompt: str, tokenizer: object) -> None:
    """A prompt the model's tokenizer cannot encode: say what a command-line user can do about it."""
    try:
        tokenizer.encode(prompt)  # type: ignore[attr-defined]
    except ValueError:
        known = getattr(getattr(tokenizer, "base", tokenizer), "stoi", None)
        if known is None:
            raise
        unknown = sorted({c for c in prompt if c not in known})
        shown = " ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:8])
        raise ValueError(tr("error.unknown_chars", count=len(unknown), shown=shown)) from None


def _cmd_doctor(args: argparse.Namespace) -> int:
    from llmlab.doctor import doctor_config, run

    doctor_config(args.steps)  # a bad --steps is refused before anything runs, with or without a GPU
    return run(out=args.out, steps=args.steps, tests=not args.skip_tests)


def _cmd_info(args: argparse.Namespace) -> int:
    from llmlab.checkpoint import describe_checkpoint, load_checkpoint

    path = Path(_checkpoint(args.checkpoint))
    payload = load_checkpoint(path)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(describe_checkpoint(payload))
    return 0


def _cmd_progress(args: argparse.Namespace) -> int:
    from llmlab.check.store import progress_lines  # the file's reader only: no check module, no model code

    print("\n".join(progress_lines()))
    return 0


_COMMANDS = {
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "generate": _cmd_generate,
    "finetune": _cmd_finetune,
    "export": _cmd_export,
    "info": _cmd_info,
    "doctor": _cmd_doctor,
    "progress": _cmd_progress,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmlab`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from llmlab.failures import TrainingError

    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, TrainingError, MemoryError) as e:
        # Expected failures: one clear line, no traceback (LLMLAB_DEBUG=1 shows it).
        if os.environ.get("LLMLAB_DEBUG"):
            raise
        print(tr("cli.error", message=e), file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`llmlab info | head -3`): nothing to report. Quiet the final flush too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        # A file or folder the system refused (permissions, a device, a full disk): name it and what to check.
        if os.environ.get("LLMLAB_DEBUG"):
            raise
        where = f" {e.filename}" if e.filename else ""
        message = f"cannot use{where}: {e.strerror or e}. Check the path, its permissions and free space."
        print(tr("cli.error", message=message), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
