"""The company-fact check in Swedish, German, Spanish, French and Chinese:
questions about the company's own facts are caught, general questions and
requests to write or explain are not, and English chat is never read with
another language's words."""

from __future__ import annotations

import pytest

from bot.knowledge.company_facts import company_fact_subject

COMPANY = [
    ("Vilka är era öppettider?", "hours"),
    ("Hur lång är leveranstiden för min beställning?", "orders"),
    ("Jag vill ha pengarna tillbaka", "refunds"),
    ("Wann haben Sie geöffnet?", "hours"),
    ("Wo ist mein Paket?", "orders"),
    ("Ich habe mein Passwort vergessen", "accounts"),
    ("¿Cuánto cuesta el envío?", "prices"),
    ("¿Dónde está mi pedido?", "orders"),
    ("Quels sont vos horaires ?", "hours"),
    ("Où est ma commande ?", "orders"),
    ("你们几点开门？", "hours"),
    ("我的订单在哪里？", "orders"),
    ("退款", "refunds"),
]
GENERAL = [
    "Vad är en faktura?",
    "Skriv en dikt om en beställning",
    "Vad är klockan?",
    "Was ist eine Rechnung?",
    "Erkläre mir die Relativitätstheorie",
    "¿Qué es un reembolso?",
    "¿Qué hora es?",
    "Qu'est-ce qu'une facture ?",
    "什么是退款？",
    "帮我写一首关于快递的诗",
    # English words that are support words elsewhere ("plan", "me").
    "Can you help me make a plan for my trip?",
]


@pytest.mark.parametrize(("text", "subject"), COMPANY)
def test_company_questions_in_each_language(text: str, subject: str) -> None:
    assert company_fact_subject(text) == subject


@pytest.mark.parametrize("text", GENERAL)
def test_general_questions_in_each_language(text: str) -> None:
    assert company_fact_subject(text) is None
