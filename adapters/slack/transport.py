"""How deliveries reach the Slack adapter: the HTTP Events API (every request's
signature checked here before Bolt sees it) or a Socket Mode connection.

Shutdown must end well within the 10 s a platform gives after SIGTERM, so
closing a connection is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError

log = logging.getLogger(__name__)

SOCKET_CLOSE_TIMEOUT = 2.0
SESSION_CLOSE_TIMEOUT = 1.0
_DIGITS = re.compile(r"^[0-9]{1,12}$")


def _utf8(raw: bytes) -> str | None:
    """``raw`` decoded as UTF-8, or ``None`` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def dispatch_http(
    request: web.Request,
    *,
    app: AsyncApp,
    verifier: SignatureVerifier | None,
    ready: Callable[[], bool],
) -> web.StreamResponse:
    """``POST /slack/events``: verify, hand to Bolt, answer with Bolt's response.

    401 for a request that is not signed with the signing secret, 503 while
    ``ready()`` is false (Slack sends the delivery again), 400 for a signed
    body that is neither JSON nor a form.
    """
    # Slack signs the raw bytes of a UTF-8 body. They are decoded as UTF-8
    # here, whatever charset the request declares: decoding by that charset
    # before the check turned an unsigned request with an unknown charset
    # or bytes that are not UTF-8 into a 500 instead of a 401.
    body = _utf8(await request.read())
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    # Checked here so that a malformed timestamp or signature is a 401, not
    # an exception inside Bolt's verifier (which would be a 500).
    if (
        verifier is None
        or body is None
        or not _DIGITS.match(timestamp)
        or not signature.isascii()
        or not verifier.is_valid(body, timestamp, signature)
    ):
        log.warning("Slack: refused an unsigned or badly signed request from %s", request.remote)
        return web.json_response({"error": "invalid request"}, status=401)
    if not ready():
        # Slack retries non-2xx deliveries; we will be ready by then.
        return web.json_response({"error": "starting up"}, status=503)
    retry = request.headers.get("X-Slack-Retry-Num")
    if retry:
        log.info("Slack: redelivery #%s (%s)", retry, request.headers.get("X-Slack-Retry-Reason"))
    try:
        # Bolt's to_bolt_request, reusing the body already read for verification.
        bolt_request = AsyncBoltRequest(
            body=body,
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
    except ValueError:
        log.warning("Slack: a signed request had a body that is not JSON or a form")
        return web.json_response({"error": "malformed body"}, status=400)
    bolt_response = await app.async_dispatch(bolt_request)
    return await to_aiohttp_response(bolt_response)


async def connect_socket(
    socket: AsyncSocketModeHandler, *, app_token: str, client: AsyncWebClient
) -> None:
    """Connect to Slack over Socket Mode; a refused app token is a ``ConfigError``."""
    try:
        # The SDK's connect() retries a refused token forever; ask once
        # ourselves so a wrong token stops start-up with a clear error.
        opened = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack refused SLACK_APP_TOKEN ({exc.response.get('error')}); use an "
            "app-level token (xapp-...) with the connections:write scope and turn "
            "Socket Mode on in the app's settings"
        ) from exc
    socket.client.wss_uri = str(opened["url"])
    await socket.connect_async()


async def close_socket(socket: AsyncSocketModeHandler) -> None:
    """Close the Socket Mode connection, giving Slack SOCKET_CLOSE_TIMEOUT to
    answer the close; past that the connection is dropped."""
    try:
        async with asyncio.timeout(SOCKET_CLOSE_TIMEOUT):
            await socket.close_async()
        return
    except TimeoutError:
        log.warning(
            "Slack: Socket Mode did not answer the close within %.0f s; dropping the connection",
            SOCKET_CLOSE_TIMEOUT,
        )
    except Exception:
        # The SDK's close can fail in ways it does not document; whatever it
        # was, the connection is dropped below and shutdown goes on.
        log.exception("Slack: closing the Socket Mode connection failed; dropping it")
    # The SDK's close() stopped at the websocket (cancelling it aborted the
    # connection): end what it would have ended after it.
    client = socket.client
    client.closed = True
    client.auto_reconnect_enabled = False
    for task in (client.message_processor, client.current_session_monitor, client.message_receiver):
        if task is not None:
            task.cancel()
    if client.aiohttp_client_session is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SESSION_CLOSE_TIMEOUT):
                await client.aiohttp_client_session.close()
