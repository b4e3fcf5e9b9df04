"""What every chat adapter shares: answer-task supervision and progressive
rendering of a reply stream. Nothing here knows a platform SDK."""

from adapters.common.render import EditPacer, MessageLost, MessageSink, Split, StreamRenderer
from adapters.common.tasks import Answer, AnswerTasks

__all__ = [
    "Answer",
    "AnswerTasks",
    "EditPacer",
    "MessageLost",
    "MessageSink",
    "Split",
    "StreamRenderer",
]
