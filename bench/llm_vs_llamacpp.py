"""Deskmate against llama.cpp's server: same GGUF, same prompts, same machine, one run.

What answers the same support conversations (a ~200-token system prompt plus
one question each, greedy, repetition penalty 1.15, up to ``--max-new-tokens``):

* ``llama.cpp`` — ``llama-server`` on the embedded GGUF file with ``--threads``
  threads and one parallel slot per conversation (continuous batching), then
  the same server answering one request at a time. Skipped, with a message,
  when no ``llama-server`` binary is found (``--llama-server``, ``$LLAMA_SERVER``
  or ``PATH``; bench/README.md says how to build one).
* ``scheduler`` — ``TransformersBackend`` in this process, default settings
  (threads and batch size ``auto``).
* ``deskmate run`` — the whole product as a subprocess, its local web chat
  over HTTP (``POST /api/chat``), default settings apart from the prompt and
  sampling that make the work identical. ``--old-tree DIR`` adds the same for
  another checkout (``git worktree add /tmp/old <commit>``), e.g. the code
  before a change; ``--compare-eager`` adds this tree with the packed decode
  step off (``DESKMATE_FAST_DECODE=off``). Deskmate is measured once its
  packed decode step is ready (``/healthz`` says so).

``--single`` runs only the rows of one conversation at a time (the quick
check of one-conversation speed); ``--prompt-tokens N`` pads every question
with a customer's pasted order history to about N prompt tokens (TTFT of
long prompts).

Every round asks new questions (a ticket number per round and conversation),
so no server can answer from a whole cached prompt; the system prompt's cache
is fair game for all. Rounds run the modes back to back, in an order that
rotates each round. Aggregate tok/s = completion tokens of a round / its wall
time; TTFT = send to first non-empty text. Completion tokens are what the
server reports (llama.cpp's usage, the scheduler's); for the web chat, whose
reply is plain text, the answer is re-tokenized with the model's tokenizer
(one more for the end-of-sequence token when it stopped early). Medians over
rounds. The machine's load average is printed before, between and after.

    python bench/llm_vs_llamacpp.py
    python bench/llm_vs_llamacpp.py --old-tree /tmp/old --rounds 3 --json out.json
    python bench/llm_vs_llamacpp.py --single --compare-eager --llama-server PATH
    python bench/llm_vs_llamacpp.py --single --only llama "this tree" --prompt-tokens 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm.base import ChatMessage, GenerationRequest, SamplingParams  # noqa: E402
from llm.gguf import embedded_gguf_path  # noqa: E402

SYSTEM_PROMPT = (
    "You are Deskmate, the customer-support assistant of Northwind Outfitters, an online shop "
    "for outdoor clothing and camping gear. Answer the customer's question clearly and politely "
    "in a few sentences. What you know: orders ship from our warehouse in Leeds within two "
    "working days; standard delivery takes 3-5 working days in the UK and 7-14 days abroad. "
    "Customers may return unworn items within 30 days for a full refund; damaged or faulty items "
    "are replaced free of charge. Refunds reach the original payment method within 5 working "
    "days of the return arriving. We accept cards, PayPal and gift cards. Support is staffed "
    "Monday to Friday 8:00-18:00 and Saturday 9:00-13:00 UK time. If you do not know something, "
    "say so and offer to bring in a human agent; never invent policies, prices or promises."
)

QUESTIONS = [
    "How do I reset my password?",
    "What are your opening hours on weekends?",
    "My order has not arrived after two weeks. What can I do?",
    "Can I change the delivery address of an order I already placed?",
    "Do you offer refunds for digital products?",
    "How can I contact a human agent?",
    "Is there a student discount?",
    "The app crashes when I open the settings page on my phone. Any idea why?",
    "How do I cancel my subscription?",
    "Which payment methods do you accept?",
    "Can I use my account on two devices at the same time?",
    "Where can I download my invoices?",
    "How long does shipping to Canada take?",
    "I was charged twice for the same order. Please help.",
    "How do I enable two-factor authentication?",
    "What is your return policy for damaged items?",
]

REPETITION_PENALTY = 1.15

# Filler for long prompts: roughly 25 tokens a line.
_HISTORY_LINE = (
    "Order {n}: 2 x trail jacket (size M), 1 x camping stove, shipped to Leeds, "
    "delivered on day {d}; no return. "
)
PROMPT_PADDING = {"lines": 0}


def question(round_no: int, index: int) -> str:
    # A new ticket number every round: nobody may answer from a whole cached prompt.
    asked = f"Ticket {round_no:02d}{index:02d}: {QUESTIONS[index % len(QUESTIONS)]}"
    lines = PROMPT_PADDING["lines"]
    if not lines:
        return asked
    history = "".join(
        _HISTORY_LINE.format(n=round_no * 1000 + index * 100 + k, d=k % 28 + 1)
        for k in range(lines)
    )
    return f"My order history: {history}\n{asked}"


@dataclass(slots=True)
class Answer:
    ttft_s: float
    tokens: int


@dataclass(slots=True)
class Round:
    mode: str
    round_no: int
    wall_s: float
    answers: list[Answer]

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.answers)

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.wall_s


Ask = Callable[[int, int], Awaitable[Answer]]  # (round, conversation index) -> answer


async def run_round(
    mode: str, ask: Ask, round_no: int, conversations: int, *, one_at_a_time: bool
) -> Round:
    started = time.perf_counter()
    if one_at_a_time:
        answers = [await ask(round_no, i) for i in range(conversations)]
    else:
        answers = list(await asyncio.gather(*(ask(round_no, i) for i in range(conversations))))
    return Round(mode, round_no, time.perf_counter() - started, answers)


# -- llama.cpp ------------------------------------------------------------------------------


def find_llama_server(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("LLAMA_SERVER")):
        if candidate:
            return candidate if Path(candidate).is_file() else shutil.which(candidate)
    return shutil.which("llama-server")


class LlamaServer:
    def __init__(self, binary: str, gguf: Path, *, threads: int, slots: int, ctx: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(tempfile.mkdtemp(prefix="llama-server-"))
        self.log = (self.log_dir / "llama-server.log").open("wb")
        args = [
            binary,
            *("--model", str(gguf)),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--threads", str(threads), "--threads-batch", str(threads)),
            *("--parallel", str(slots), "--ctx-size", str(ctx * slots)),
        ]
        self.args = args
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.log_dir, ignore_errors=True)


async def llama_ask(
    session: Any, base: str, messages: list[dict[str, str]], max_new: int
) -> Answer:
    body = {
        "messages": messages,
        "max_tokens": max_new,
        "temperature": 0.0,
        "repeat_penalty": REPETITION_PENALTY,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with session.post(f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            for choice in event.get("choices") or []:
                if first is None and (choice.get("delta") or {}).get("content"):
                    first = time.perf_counter() - started
            usage = event.get("usage")
            if usage:
                tokens = int(usage.get("completion_tokens") or 0)
    return Answer(first if first is not None else time.perf_counter() - started, tokens)


# -- deskmate run ---------------------------------------------------------------------------


class DeskmateServer:
    """``deskmate run`` of the checkout ``tree``, its model folder shared with ``models``."""

    def __init__(self, tree: Path, models: Path, env: dict[str, str], label: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.label = f"deskmate run ({label})"
        self.data = Path(tempfile.mkdtemp(prefix=f"deskmate-{label}-"))
        # The converted model is shared: converting the GGUF again would take half a minute.
        (self.data / "models").symlink_to(models.resolve())
        # So are the packed weights of the fast decode step, as between two starts.
        compiled = models.parent / "compiled"
        compiled.mkdir(exist_ok=True)
        (self.data / "compiled").symlink_to(compiled.resolve())
        self.log_path = self.data / "deskmate.log"
        self.log = self.log_path.open("wb")
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
            **env,
            "DESKMATE_DATA_DIR": str(self.data),
            "PORT": str(self.port),
            "PYTHONPATH": str(tree),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            cwd=tree,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        print(f"{self.label}: peak RSS {peak_rss_mib(self.proc.pid)}", flush=True)
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


async def web_ask(session: Any, base: str, session_id: str, text: str, count: Any) -> Answer:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    async with session.post(
        f"{base}/api/chat", json={"session": session_id, "text": text}
    ) as response:
        response.raise_for_status()
        async for chunk in response.content.iter_any():
            piece = chunk.decode("utf-8", errors="replace")
            if first is None and piece.strip():
                first = time.perf_counter() - started
            parts.append(piece)
    return Answer(
        first if first is not None else time.perf_counter() - started, count("".join(parts))
    )


# -- shared ---------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> str:
    """The process's peak resident memory so far (``VmHWM``), as text."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_healthy(
    session: Any, url: str, proc: subprocess.Popen[bytes], what: str, limit_s: float
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{what} did not become ready within {limit_s:.0f} s")


async def wait_fast_decode(session: Any, url: str, limit_s: float) -> str:
    """What /healthz says of the packed decode step once it is no longer building."""
    deadline = time.monotonic() + limit_s
    state = "building"
    while time.monotonic() < deadline:
        async with session.get(url) as response:
            state = str((await response.json()).get("fast_decode", "not reported"))
        if state != "building":
            break
        await asyncio.sleep(0.5)
    return state


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def summary(rounds: Sequence[Round]) -> dict[str, float]:
    return {
        "tok_per_s": statistics.median(r.tok_per_s for r in rounds),
        "ttft_p50_s": statistics.median(
            percentile([a.ttft_s for a in r.answers], 0.5) for r in rounds
        ),
        "ttft_p95_s": statistics.median(
            percentile([a.ttft_s for a in r.answers], 0.95) for r in rounds
        ),
        "tokens": statistics.median(r.tokens for r in rounds),
    }


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument(
        "--solo", type=int, default=4, help="questions asked one at a time in the solo rows"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--llama-server", help="llama-server binary (default: $LLAMA_SERVER, PATH)")
    parser.add_argument("--old-tree", type=Path, help="also run `deskmate run` of this checkout")
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / "data", help="holds models/ (the converted GGUF)"
    )
    parser.add_argument(
        "--only", nargs="+", default=[], help="run only the modes whose name contains one of these"
    )
    parser.add_argument("--skip-scheduler", action="store_true")
    parser.add_argument(
        "--single", action="store_true", help="only the one-conversation-at-a-time rows"
    )
    parser.add_argument(
        "--compare-eager",
        action="store_true",
        help="also `deskmate run` of this tree with DESKMATE_FAST_DECODE=off",
    )
    parser.add_argument(
        "--prompt-tokens", type=int, default=0, help="pad questions to about this many tokens"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import aiohttp
    from tokenizers import Tokenizer

    from llm.transformers import TransformersBackend
    from llm.transformers.loading import find_model_dir

    gguf = embedded_gguf_path()
    model_dir = find_model_dir("embedded", args.data_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    max_new = args.max_new_tokens

    def count(text: str) -> int:
        ids = len(tokenizer.encode(text.strip(), add_special_tokens=False).ids)
        return ids + 1 if ids < max_new else ids

    def messages(round_no: int, i: int) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question(round_no, i)},
        ]

    if args.prompt_tokens:
        base = len(tokenizer.encode(_render(model_dir, messages(1, 0))).ids)
        line = len(tokenizer.encode(_HISTORY_LINE.format(n=1000, d=1)).ids)
        PROMPT_PADDING["lines"] = max(0, (args.prompt_tokens - base) // line)
    prompt_tokens = statistics.median(
        len(tokenizer.encode(_render(model_dir, messages(1, i))).ids) for i in range(len(QUESTIONS))
    )
    print(f"load average at start: {load()}", flush=True)
    print(f"GGUF: {gguf}; prompts: median {prompt_tokens:.0f} tokens", flush=True)

    web_env = {
        "DESKMATE_MODEL": "embedded",
        "DESKMATE_SYSTEM_PROMPT": SYSTEM_PROMPT,
        "DESKMATE_MAX_NEW_TOKENS": str(max_new),
        "DESKMATE_TEMPERATURE": "0",
        "DESKMATE_REPETITION_PENALTY": str(REPETITION_PENALTY),
        # The model answers every prompt, company questions included: the
        # work is the same as llama-server's (an older tree ignores this).
        "DESKMATE_COMPANY_FACTS": "answer",
        "LOG_LEVEL": "WARNING",
        # Long prompts (--prompt-tokens) must not be refused as too long.
        "DESKMATE_MAX_INPUT_CHARS": "40000",
    }
    modes: dict[str, tuple[Ask, int, bool]] = {}
    cleanups: list[Callable[[], None]] = []
    backend: Any = None
    timeout = aiohttp.ClientTimeout(total=600)
    # A connection per request: llama-server closes idle keep-alive connections under us.
    conns = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=conns) as http:
        try:
            wanted = lambda name: not args.only or any(o in name for o in args.only)  # noqa: E731
            binary = find_llama_server(args.llama_server)
            if binary is None:
                print(
                    "llama.cpp: no llama-server binary (pass --llama-server, set $LLAMA_SERVER "
                    "or put it on PATH; bench/README.md says how to build one); skipping it",
                    flush=True,
                )
            elif wanted("llama.cpp"):
                llama = LlamaServer(
                    binary, gguf, threads=args.threads, slots=args.conversations, ctx=512
                )
                cleanups.append(llama.stop)
                await wait_healthy(http, f"{llama.base}/health", llama.proc, "llama-server", 120)
                print(f"llama-server ready: {' '.join(llama.args[1:])}", flush=True)

                async def ask_llama(round_no: int, i: int, base: str = llama.base) -> Answer:
                    return await llama_ask(http, base, messages(round_no, i), max_new)

                label = f"llama.cpp llama-server, {args.threads} threads"
                if not args.single:
                    modes[f"{label}, {args.conversations} parallel slots"] = (
                        ask_llama,
                        args.conversations,
                        False,
                    )
                modes[f"{label}, one request at a time"] = (ask_llama, args.solo, True)

            if not args.skip_scheduler and wanted("scheduler"):
                backend = TransformersBackend(data_dir=args.data_dir)
                await backend.load()
                while backend.fast_decode == "building":  # noqa: ASYNC110 (set by a thread)
                    await asyncio.sleep(0.5)
                print(
                    f"scheduler ready: {backend.loaded_info}, fast decode {backend.fast_decode}",
                    flush=True,
                )
                sampling = SamplingParams(
                    max_new_tokens=max_new, temperature=0.0, repetition_penalty=REPETITION_PENALTY
                )

                async def ask_scheduler(round_no: int, i: int) -> Answer:
                    request = GenerationRequest(
                        [ChatMessage(m["role"], m["content"]) for m in messages(round_no, i)],
                        sampling=sampling,
                    )
                    started = time.perf_counter()
                    first: float | None = None
                    tokens = 0
                    async for delta in backend.stream(request):
                        if first is None and delta.text.strip():
                            first = time.perf_counter() - started
                        if delta.usage is not None:
                            tokens = delta.usage.completion_tokens
                    return Answer(
                        first if first is not None else time.perf_counter() - started, tokens
                    )

                label = "Deskmate scheduler (in process, defaults)"
                if not args.single:
                    modes[f"{label}, {args.conversations} concurrent"] = (
                        ask_scheduler,
                        args.conversations,
                        False,
                    )
                modes[f"{label}, one at a time"] = (ask_scheduler, args.solo, True)

            trees: list[tuple[str, Path, dict[str, str]]] = [("this tree", ROOT, {})]
            if args.compare_eager:
                trees.append(("this tree, eager decode", ROOT, {"DESKMATE_FAST_DECODE": "off"}))
            if args.old_tree is not None:
                trees.append((f"old tree {args.old_tree}", args.old_tree.resolve(), {}))
            for name, tree, extra in trees:
                label = f"deskmate run ({name}), web chat"
                if not wanted(label):
                    continue
                server = DeskmateServer(
                    tree,
                    args.data_dir / "models",
                    {**web_env, **extra},
                    "".join(c for c in name if c.isalnum())[:24],
                )
                cleanups.append(server.stop)
                try:
                    await wait_healthy(http, f"{server.base}/healthz", server.proc, label, 300)
                except RuntimeError:
                    server.log.flush()
                    print(server.log_path.read_text()[-3000:], file=sys.stderr)
                    raise
                fast = await wait_fast_decode(http, f"{server.base}/healthz", 300)
                print(
                    f"{label} ready on {server.base}, fast decode {fast} (log {server.log_path})",
                    flush=True,
                )

                async def ask_web(round_no: int, i: int, server: DeskmateServer = server) -> Answer:
                    session_id = f"bench{round_no:02d}c{i:02d}{os.getpid()}"
                    return await web_ask(
                        http, server.base, session_id, question(round_no, i), count
                    )

                if not args.single:
                    modes[f"{label}, {args.conversations} conversations"] = (
                        ask_web,
                        args.conversations,
                        False,
                    )
                modes[f"{label}, one conversation at a time"] = (ask_web, args.solo, True)

            # Warm-up, every conversation at once: first calls pick kernels and
            # allocate, and llama-server caches the system prompt per slot (the
            # first round otherwise prefilled it 16 times: 37-49 tok/s, TTFT 13-15 s).
            for ask, conversations, _ in modes.values():
                await run_round("warm-up", ask, 0, conversations, one_at_a_time=False)

            results: dict[str, list[Round]] = {mode: [] for mode in modes}
            names = list(modes)
            if not names:
                print("nothing to measure: no mode matched --only", flush=True)
                return 1
            for round_no in range(1, args.rounds + 1):
                shift = (round_no - 1) % len(names)
                order = names[shift:] + names[:shift]
                print(f"round {round_no}, load average {load()}", flush=True)
                for mode in order:
                    ask, conversations, one_at_a_time = modes[mode]
                    result = await run_round(
                        mode, ask, round_no, conversations, one_at_a_time=one_at_a_time
                    )
                    results[mode].append(result)
                    ttfts = [a.ttft_s for a in result.answers]
                    print(
                        f"  {mode}: {result.tok_per_s:6.1f} tok/s, TTFT p50 "
                        f"{percentile(ttfts, 0.5):.2f} s p95 {percentile(ttfts, 0.95):.2f} s "
                        f"({result.tokens} tokens in {result.wall_s:.1f} s)",
                        flush=True,
                    )
        finally:
            if backend is not None:
                await backend.aclose()
            for cleanup in reversed(cleanups):
                cleanup()

    print(f"load average at the end: {load()}")
    print()
    # Concurrent rows against llama-server's parallel slots, one-at-a-time rows
    # against its one request at a time.
    references = {
        solo: next(
            (
                summary(results[m])["tok_per_s"]
                for m in results
                if "llama-server" in m and modes[m][2] == solo
            ),
            None,
        )
        for solo in (False, True)
    }
    print(
        f"Medians of {args.rounds} rounds; {args.conversations} conversations, "
        f"solo rows {args.solo} questions one after another; up to {max_new} new tokens, greedy; "
        f"prompts: median {prompt_tokens:.0f} tokens."
    )
    print()
    print("| what | aggregate tok/s | TTFT p50 | TTFT p95 | vs llama.cpp server (same mode) |")
    print("|---|---:|---:|---:|---:|")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "modes": {}}
    for mode, rounds in results.items():
        s = summary(rounds)
        ref_tok = references[modes[mode][2]]
        ratio = f"{s['tok_per_s'] / ref_tok:.2f}x" if ref_tok else "-"
        print(
            f"| {mode} | {s['tok_per_s']:.1f} | {s['ttft_p50_s']:.2f} s | "
            f"{s['ttft_p95_s']:.2f} s | {ratio} |"
        )
        report["modes"][mode] = {"summary": s, "rounds": [asdict(r) for r in rounds]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _render(model_dir: Path, messages: list[dict[str, str]]) -> str:
    from transformers import AutoTokenizer

    tokenizer = _TOKENIZERS.get(model_dir)
    if tokenizer is None:
        tokenizer = _TOKENIZERS[model_dir] = AutoTokenizer.from_pretrained(model_dir)
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


_TOKENIZERS: dict[Path, Any] = {}


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
