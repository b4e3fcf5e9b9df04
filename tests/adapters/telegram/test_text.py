from __future__ import annotations

import pytest

from adapters.telegram.text import MESSAGE_LIMIT, split_first, split_message, to_html, utf16_len


def test_utf16_length_counts_astral_characters_twice() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len("é") == 1
    assert utf16_len("😀") == 2
    assert utf16_len("a😀b") == 4


def test_short_text_is_one_piece() -> None:
    assert split_message("Hello there.") == ["Hello there."]
    assert split_message("   \n ") == []


def test_long_text_splits_on_paragraphs_in_order() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(40)]
    text = "\n\n".join(paragraphs)
    pieces = split_message(text)
    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert all(utf16_len(p) <= MESSAGE_LIMIT for p in pieces)
    # Every cut falls right after a paragraph break.
    assert all(p.endswith("\n\n") for p in pieces[:-1])
    assert all(p[0] == "P" for p in pieces)


def test_falls_back_to_sentences_then_words_then_hard_cut() -> None:
    sentences = " ".join(f"This is sentence number {i}." for i in range(600))
    pieces = split_message(sentences)
    assert "".join(pieces) == sentences
    assert all(p.rstrip().endswith(".") for p in pieces)

    words = " ".join(["lorem"] * 2000)
    pieces = split_message(words)
    assert "".join(pieces) == words
    assert all(p.endswith(" ") for p in pieces[:-1])

    blob = "x" * 10_000
    assert split_message(blob) == ["x" * 4096, "x" * 4096, "x" * 1808]


def test_limit_is_measured_in_utf16_units() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units, 3000 characters
    pieces = split_message(text)
    assert [utf16_len(p) for p in pieces] == [4096, 1904]
    assert "".join(pieces) == text


def test_split_first_keeps_whitespace_with_the_first_piece() -> None:
    head, rest = split_first("aaaa bbbb\n\ncccc", limit=12)
    assert (head, rest) == ("aaaa bbbb\n\n", "cccc")
    with pytest.raises(ValueError):
        split_first("x", limit=0)


def test_tiny_first_piece_is_avoided() -> None:
    # A paragraph break right at the start would leave a 2-character message.
    text = "Hi\n\n" + "word " * 30
    head, _ = split_first(text, limit=60)
    assert len(head) > 12


def test_html_escapes_markup_characters() -> None:
    assert to_html("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert to_html("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_html_converts_bold_and_code() -> None:
    assert to_html("Use **bold** and `x<y`") == "Use <b>bold</b> and <code>x&lt;y</code>"
    assert to_html("```python\nif a < b:\n    pass\n```") == ("<pre>if a &lt; b:\n    pass\n</pre>")
    # Unpaired markers (a half-streamed answer) stay literal.
    assert to_html("**not closed and `open") == "**not closed and `open"
    assert to_html("2 ** 3 ** 4") == "2 ** 3 ** 4"
