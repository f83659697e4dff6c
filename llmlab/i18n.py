"""The learner's language for the package's labels and messages: English, or Japanese with ``LLMLAB_LANG=ja``.

The Japanese notebooks (``notebooks/ja/``, built by ``tools/ja_notebooks.py``) set ``LLMLAB_LANG=ja`` in
their first code cell; nothing else changes with it. Package code asks for a message by key::

    from llmlab.i18n import tr
    W.Button(description=tr("button.train"))                       # "Train" / "学習開始"
    raise FileNotFoundError(tr("error.no_data", path=d, what=what, command=cmd))

Only what a learner reads goes here: widget labels, status lines, hints and the most common errors. Plot
text stays English (matplotlib's default font has no Japanese glyphs), and so do names a learner types
(``max_lr``, ``embedding_size``) and commands. A key missing from a language falls back to English.
"""

from __future__ import annotations

import os
import string

LANG_ENV = "LLMLAB_LANG"
LANGUAGES = ("en", "ja")

# key -> {language: text}; ``{fields}`` are filled by tr(). Both languages must use the same fields.
MESSAGES: dict[str, dict[str, str]] = {
    # widgets/experiment.py
    "button.train": {"en": "Train", "ja": "学習開始"},
    "label.repeat": {"en": "repeat ×N", "ja": "繰り返し ×N"},
    "label.x_axis": {"en": "x axis", "ja": "横軸"},
    "label.prediction": {"en": "prediction", "ja": "予想"},
    "placeholder.prediction": {
        "en": "Before you press Train: what do you expect, and why?",
        "ja": "学習開始を押す前に：どうなると思いますか？その理由は？",
    },
    "status.ready": {"en": "Ready.", "ja": "準備ができました。"},
    "status.training": {"en": "Training {steps} steps...", "ja": "{steps} ステップ学習しています…"},
    "status.training_seed": {
        "en": "Training seed {seed} ({i} of {n}), {steps} steps...",
        "ja": "シード {seed} で学習しています（{n} 回中 {i} 回目）、{steps} ステップ…",
    },
    "status.run_done": {
        "en": "Run #{index} done: val loss {loss}{noise} ({bpb} bits/byte), {tps} tokens/s.",
        "ja": "実行 #{index} が終わりました：検証損失 {loss}{noise}（{bpb} bits/byte）、毎秒 {tps} トークン。",
    },
    "status.noise": {"en": " ± {spread} over {n} seeds", "ja": " ± {spread}（シード {n} 個）"},
    "heading.all_runs": {"en": "All runs", "ja": "すべての実行"},
    "note.heads_changed": {
        "en": "num_heads={wanted} does not divide embedding_size={emb} (each head gets embedding_size / num_heads "
        "channels), so num_heads is now {chosen}. Possible: {options}.",
        "ja": "num_heads={wanted} は embedding_size={emb} を割り切れません（各ヘッドは embedding_size / num_heads "
        "チャネルを受け持ちます）。そこで num_heads を {chosen} にしました。選べる値: {options}。",
    },
    # compare.py: the course's one rule for "better than" (Comparison.says)
    "compare.better": {
        "en": "{lower} is lower than {higher} by {gap:.3f} ({level}% interval of the gap {low:+.3f} to {high:+.3f}, "
        "{n_a} and {n_b} seeds): a difference larger than the noise.",
        "ja": "{lower} は {higher} より {gap:.3f} 低い値です（差の {level}% 区間 {low:+.3f} 〜 {high:+.3f}、シード "
        "{n_a} 個と {n_b} 個）。ノイズより大きな差です。",
    },
    "compare.suggestive": {
        "en": "{lower} is lower than {higher} by {gap:.3f}, but with {n_a} and {n_b} seeds this is only suggestive "
        "({level}% interval of the gap {low:+.3f} to {high:+.3f}): re-run with more seeds before calling it better.",
        "ja": "{lower} は {higher} より {gap:.3f} 低い値ですが、シード {n_a} 個と {n_b} 個では示唆にとどまります"
        "（差の {level}% 区間 {low:+.3f} 〜 {high:+.3f}）。良いと言う前にシードを増やして再実行してください。",
    },
    "compare.noise": {
        "en": "{lower} and {higher} differ by {gap:.3f}, within the noise ({level}% interval of the gap {low:+.3f} "
        "to {high:+.3f}, {n_a} and {n_b} seeds): no winner.",
        "ja": "{lower} と {higher} の差 {gap:.3f} はノイズの範囲内です（差の {level}% 区間 {low:+.3f} 〜 "
        "{high:+.3f}、シード {n_a} 個と {n_b} 個）。勝者はいません。",
    },
    "compare.unknown": {
        "en": "{a} and {b} cannot be told apart from noise: {n_a} and {n_b} seeds (at least 2 each are needed to "
        "see the spread, 3 to call one better).",
        "ja": "{a} と {b} はノイズと区別できません。シードは {n_a} 個と {n_b} 個です（ばらつきを見るには各 2 個以上、"
        "良いと言うには 3 個以上が必要です）。",
    },
    # widgets/live.py: the runs table
    "table.empty": {
        "en": "No runs yet: choose settings and press <b>Train</b>.",
        "ja": "まだ実行がありません。設定を選んで <b>学習開始</b> を押してください。",
    },
    # the mark on the lowest-mean run follows llmlab.compare's verdict; {says} is Comparison.says()
    "table.best": {"en": "Bold: {says}", "ja": "太字：{says}"},
    "table.suggestive": {
        "en": "Italic: the lowest mean so far, not yet a finding. {says}",
        "ja": "斜体：平均はいちばん低いものの、まだ結論ではありません。{says}",
    },
    "table.no_best": {"en": "No run is marked: {says}", "ja": "印を付けた実行はありません。{says}"},
    "table.no_best_one_seed": {
        "en": "No run is marked: {says} Set repeat ×3 or more for each setting.",
        "ja": "印を付けた実行はありません。{says}「繰り返し ×N」を 3 以上にして各設定を学習してください。",
    },
    # widgets/explorer.py: the schedule panel's line
    "schedule.peak": {
        "en": "peak {peak} at step {step}, ending at {end}",
        "ja": "ピーク {peak}（ステップ {step}）、最後は {end}",
    },
    "schedule.budget_first": {
        "en": "; the time budget (max_seconds={seconds}) runs out at step {stop} at {sps} steps/s, before "
        "max_iters={max_iters}: the run stops there, and its cosine reaches min_lr there.",
        "ja": "。毎秒 {sps} ステップなら、時間の予算（max_seconds={seconds}）は max_iters={max_iters} より前の"
        "ステップ {stop} で尽きます。学習はそこで止まり、コサインもそこで min_lr に達します。",
    },
    "schedule.steps_first": {
        "en": "; at {sps} steps/s max_iters={max_iters} comes before the time budget (max_seconds={seconds} ends at "
        "step {budget}); the cosine follows whichever progress, steps or time, is further along.",
        "ja": "。毎秒 {sps} ステップなら、max_iters={max_iters} のほうが時間の予算（max_seconds={seconds}、"
        "ステップ {budget} で終了）より先に来ます。コサインは、ステップと時間のうち進んでいるほうに従います。",
    },
    "schedule.budget_unknown": {
        "en": "; max_seconds={seconds} may stop the run, and end its cosine, before max_iters={max_iters}: this "
        "curve counts steps only (give steps_per_second= to place the budget).",
        "ja": "。max_seconds={seconds} により、max_iters={max_iters} より前に学習が止まり、コサインもそこで終わる"
        "かもしれません。この曲線はステップだけで描いています（予算の位置を描くには steps_per_second= を"
        "指定してください）。",
    },
    # widgets/race.py
    "button.race": {"en": "Race", "ja": "レース開始"},
    "label.seconds_each": {"en": "seconds each", "ja": "各秒数"},
    "note.race_intro": {
        "en": "Tick techniques, then Race: the baseline and your mix train one after the other.",
        "ja": "技法にチェックを入れてからレース開始を押してください。"
        "ベースラインとあなたの組み合わせが順に学習します。",
    },
    "status.racing": {"en": "Racing...", "ja": "レース中…"},
    "status.race_done": {
        "en": "Done: baseline {baseline}, mix {mix} bits/byte (lower wins).",
        "ja": "完了：ベースライン {baseline}、組み合わせ {mix} bits/byte（低いほうの勝ち）。",
    },
    # widgets/sampling.py
    "note.diversity": {
        "en": "<b>diversity {score}</b>: distinct-{n} over words, the share of distinct word pairs among all word "
        "pairs of the {count} continuations (1.0: no pair repeats; low: the samples say the same thing).",
        "ja": "<b>多様性 {score}</b>：単語単位の distinct-{n}。{count} 個の続きに現れる単語ペアのうち、異なるペアの"
        "割合です（1.0：どのペアも繰り返されない。低い：どのサンプルも同じことを言っている）。",
    },
    "label.sample": {"en": "sample {i}", "ja": "サンプル {i}"},
    "label.seed": {"en": "seed {seed}", "ja": "シード {seed}"},
    # data/batches.py: load_meta
    "error.no_data": {
        "en": "no prepared data in {path} ({what}); create it with: {command}",
        "ja": "{path} に準備済みのデータがありません（{what}）。次のコマンドで作成してください: {command}",
    },
    "error.no_data.folder": {"en": "folder does not exist", "ja": "フォルダがありません"},
    "error.no_data.file": {"en": "{name} is missing", "ja": "{name} がありません"},
    # failures.py: diverged (the advice that follows stays as the package words it)
    "error.diverged": {
        "en": "{what} became {value} at step {step} (lr={lr}): training diverged.",
        "ja": "ステップ {step} で {what} が {value} になりました（lr={lr}）。学習が発散しています。",
    },
    # failures.py: interrupted, with the state saved
    "note.interrupted_saved": {
        "en": "interrupted{how} at step {step} of {total}: this run's state is saved in {path}; resume=True "
        "(CLI: --resume) continues exactly from there.",
        "ja": "ステップ {step}/{total} で中断しました{how}。この実行の状態は {path} に保存されています。resume=True"
        "（CLI では --resume）で、ちょうどその続きから再開できます。",
    },
    # failures.py: out of memory with no way to continue; {fit} and {more} are settings to type
    "error.oom": {
        "en": "out of memory on {device} at batch_size={batch_size}, block_size={block_size}, "
        "grad_accum_steps={accum} ({millions} M parameters). Try --set {fit} (same sequences per step){more}.",
        "ja": "{device} でメモリが足りません（batch_size={batch_size}、block_size={block_size}、"
        "grad_accum_steps={accum}、パラメータ {millions} M 個）。--set {fit} を試してください（1 ステップあたりの"
        "シーケンス数は同じです）{more}。",
    },
    "error.oom.smaller_model": {
        "en": ", or a smaller model (embedding_size/depth)",
        "ja": "。または小さなモデル（embedding_size/depth）にしてください",
    },
    # cli.py and the settings: the command line's common errors
    "cli.error": {"en": "error: {message}", "ja": "エラー: {message}"},
    "error.unknown_setting": {
        "en": "unknown setting {name}.{hint} Valid settings: {valid}.",
        "ja": "{name} という設定はありません。{hint}使える設定: {valid}。",
    },
    "hint.did_you_mean": {"en": " Did you mean {name}?", "ja": "{name} のことですか？"},
    "error.not_divisible": {
        "en": "num_heads={num_heads} is not valid: embedding_size={embedding_size} must be divisible by num_heads; "
        "choose num_heads from {divisors} or change embedding_size to a multiple of {num_heads}.",
        "ja": "num_heads={num_heads} は使えません。embedding_size={embedding_size} は num_heads で割り切れる"
        "必要があります。num_heads を {divisors} から選ぶか、embedding_size を {num_heads} の倍数にしてください。",
    },
    "error.unknown_chars": {
        "en": "--prompt has {count} character(s) this character-level model never saw in training: {shown}. Remove "
        "them from the prompt, or use a model trained on BPE data, which encodes any text (llmlab train --set "
        "tokenizer=bpe --out out/bpe).",
        "ja": "--prompt に、この文字単位のモデルが学習で一度も見ていない文字が {count} 個あります: {shown}。"
        "プロンプトから取り除くか、どんなテキストも符号化できる BPE のデータで学習したモデルを使ってください"
        "（llmlab train --set tokenizer=bpe --out out/bpe）。",
    },
    "error.out_holds_run": {
        "en": "{out} holds {what} ({step}{files}): --resume it{longer}, choose another --out, or pass --overwrite "
        "to replace it (in Python: resume=True or overwrite=True).",
        "ja": "{out} には{what}があります（{step}{files}）。--resume で続けるか{longer}、別の --out を選ぶか、"
        "--overwrite で置き換えてください（Python では resume=True か overwrite=True）。",
    },
    "run.finished": {"en": "a finished run", "ja": "最後まで終わった実行"},
    "run.stopped": {"en": "a stopped run", "ja": "途中で止まった実行"},
    "run.earlier": {"en": "an earlier run", "ja": "以前の実行"},
    "run.step_of": {"en": "step {step} of {total}; ", "ja": "{total} ステップ中 {step}。"},
    "run.longer": {
        "en": " (with --set max_iters=N to train longer)",
        "ja": "（さらに学習するなら --set max_iters=N も）",
    },
    "cli.interrupted": {
        "en": "interrupted{how} at step {step}: this run's state is saved in {path}.{sample}{resume}",
        "ja": "ステップ {step} で中断しました{how}。この実行の状態は {path} に保存されています。{sample}{resume}",
    },
    "cli.best_so_far": {"en": " Best so far: {path}.", "ja": "これまでの最良: {path}。"},
    "cli.no_best_yet": {
        "en": " No {best} yet (the first evaluation after step 0 writes it): `llmlab generate` samples from {last} "
        "until then.",
        "ja": "{best} はまだありません（ステップ 0 のあとの最初の評価で書き込まれます）。それまで `llmlab generate` は "
        "{last} から生成します。",
    },
    "cli.continue_with": {"en": " Continue with: {command}", "ja": "続きは: {command}"},
    # hf.py: where GPT-2's weights came from, or why they could not be had
    "gpt2.cached": {
        "en": "read from the local Hugging Face cache",
        "ja": "ローカルの Hugging Face キャッシュから読み込みました",
    },
    "gpt2.no_download": {
        "en": "{name} is not in the local Hugging Face cache, and this run downloads nothing",
        "ja": "{name} はローカルの Hugging Face キャッシュになく、この実行では何もダウンロードしません",
    },
    "gpt2.offline": {
        "en": "HF_HUB_OFFLINE is set, and {name} is not in the local Hugging Face cache",
        "ja": "HF_HUB_OFFLINE が設定されています。そして {name} はローカルの Hugging Face キャッシュにありません",
    },
    "gpt2.unreachable": {
        "en": "the Hugging Face hub cannot be reached ({error})",
        "ja": "Hugging Face Hub に接続できません（{error}）",
    },
    "gpt2.downloaded": {
        "en": "downloaded from the Hugging Face hub (cached from now on)",
        "ja": "Hugging Face Hub からダウンロードしました（次からはキャッシュから読み込みます）",
    },
    "error.oom.bfloat16": {"en": ", or dtype=bfloat16", "ja": "。または dtype=bfloat16 にしてください"},
    # runtime.py: where training runs, and why not on a GPU
    "note.cpu": {
        "en": "Training on CPU ({threads} threads): no CUDA GPU, because {why} Small presets such as cpu_small are "
        "sized for this.",
        "ja": "CPU で学習します（{threads} スレッド）。CUDA GPU が使えない理由：{why} cpu_small のような小さな"
        "プリセットは CPU 向けの大きさです。",
    },
    "why.cpu_wheel": {
        "en": "this torch build ({version}) has no CUDA support (a CPU-only wheel); on a machine with an NVIDIA GPU "
        "install the CUDA build of torch (see the README).",
        "ja": "この torch（{version}）は CUDA に対応していない CPU 専用版です。NVIDIA GPU のあるマシンでは CUDA 版の "
        "torch をインストールしてください（README 参照）。",
    },
    "why.no_gpu": {
        "en": "torch {version} was built for CUDA {cuda} but sees no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES "
        "hides it; check `nvidia-smi`).",
        "ja": "torch {version} は CUDA {cuda} 用ですが GPU が見えません（NVIDIA ドライバがないか、"
        "CUDA_VISIBLE_DEVICES で隠されています。`nvidia-smi` で確認してください）。",
    },
}


def language() -> str:
    """The language chosen by ``LLMLAB_LANG`` ("en" when unset); "ja_JP.UTF-8"-style values are accepted."""
    raw = os.environ.get(LANG_ENV, "").strip()
    lang = raw.lower().replace("-", "_").split("_")[0].split(".")[0] or "en"
    if lang not in LANGUAGES:
        raise ValueError(f"{LANG_ENV}={raw!r} is not a language llmlab speaks: set one of {LANGUAGES}, or unset it")
    return lang


def tr(key: str, lang: str | None = None, **fields: object) -> str:
    """The message ``key`` in ``lang`` (default: :func:`language`), with ``fields`` filled in."""
    if key not in MESSAGES:
        raise KeyError(f"no message {key!r} in llmlab.i18n.MESSAGES; add it there with an 'en' and a 'ja' text")
    lang = lang or language()
    if lang not in LANGUAGES:
        raise ValueError(f"lang={lang!r} is not a language llmlab speaks: use one of {LANGUAGES}")
    texts = MESSAGES[key]
    return texts.get(lang, texts["en"]).format(**fields)


def fields(text: str) -> set[str]:
    """The names of the ``{fields}`` in ``text`` (what tr() must be given)."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}
