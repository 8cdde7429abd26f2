"""How every Kafka client connects: the one place the security settings become aiokafka
options, and the start-up check that turns a refused password or an untrusted certificate
into one line naming the setting.

:func:`client_options` is what every producer, consumer and admin client of
``common.kafka`` is built with (the scoring worker's faust app gets the same options as
faust credentials, :func:`scoring.adapters.faust_app.broker_credentials`).
:func:`check_connection` is called once by each service before it starts its clients:
aiokafka logs a refused login or a failed TLS handshake and keeps retrying, which from
outside looks like a slow broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from common.settings import CommonSettings

log = logging.getLogger(__name__)

CREDENTIALS = "TENURE_KAFKA_SASL_USERNAME/TENURE_KAFKA_SASL_PASSWORD"


class KafkaSecurityError(Exception):
    """The Kafka security settings cannot work: the message (one line) names the setting.

    Not an outage: retrying cannot help, so the process stops (see :func:`check_connection`).
    """


def ssl_context(settings: CommonSettings) -> ssl.SSLContext | None:
    """The TLS context of ``settings`` (None unless SSL or SASL_SSL): verifies the broker's
    certificate and host name against ``kafka_ssl_cafile`` (else the system's CAs) and
    presents the client certificate if one is set. Raises :class:`KafkaSecurityError`
    naming the setting whose file cannot be read or used."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile, certfile, keyfile = (
        settings.kafka_ssl_cafile,
        settings.kafka_ssl_certfile,
        settings.kafka_ssl_keyfile,
    )
    for name, path in (
        ("TENURE_KAFKA_SSL_CAFILE", cafile),
        ("TENURE_KAFKA_SSL_CERTFILE", certfile),
        ("TENURE_KAFKA_SSL_KEYFILE", keyfile),
    ):
        if path is not None and not path.is_file():
            raise KafkaSecurityError(f"{name}: no such file {path}")
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise KafkaSecurityError(
            f"TENURE_KAFKA_SSL_CAFILE {cafile} holds no usable PEM certificate: {exc}"
        ) from exc
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise KafkaSecurityError(
                f"TENURE_KAFKA_SSL_CERTFILE {certfile} and TENURE_KAFKA_SSL_KEYFILE {keyfile} "
                f"are not a PEM certificate and its unencrypted key: {exc}"
            ) from exc
    return context


def security_options(settings: CommonSettings) -> dict[str, Any]:
    """The aiokafka security options alone (security_protocol, ssl_context, sasl_*)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password is not None else None,
        )
    return options


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """The options every aiokafka client of Tenure is built with: where the cluster is and
    how to connect to it (``bootstrap_servers`` and :func:`security_options`)."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **security_options(settings)}


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        hosts.append((host.strip("[]") or item.strip(), int(port) if port.isdigit() else 9092))
    return hosts


def _diagnose(exc: BaseException, settings: CommonSettings, where: str) -> str | None:
    """The one-line reason ``exc`` (from connecting to ``where``) is a configuration error,
    or None if it may be an outage (refused, unreachable, timed out)."""
    if isinstance(exc, SaslAuthenticationFailed):
        return f"Kafka refused the SASL credentials ({CREDENTIALS}) at {where}: {exc}"
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"the broker at {where} does not enable TENURE_KAFKA_SASL_MECHANISM="
            f"{settings.kafka_sasl_mechanism}: {exc}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted_by = (
            f"TENURE_KAFKA_SSL_CAFILE ({settings.kafka_ssl_cafile})"
            if settings.kafka_ssl_cafile is not None
            else "the system's CAs (set TENURE_KAFKA_SSL_CAFILE)"
        )
        if "hostname" in str(exc).lower() or "ip address mismatch" in str(exc).lower():
            return (
                f"the broker's certificate at {where} does not name that host "
                f"(TENURE_KAFKA_BOOTSTRAP): {exc.verify_message}"
            )
        return f"the broker's certificate at {where} is not trusted by {trusted_by}: " + str(
            exc.verify_message
        )
    if isinstance(exc, ssl.SSLError):
        text = str(exc).lower()
        if "certificate required" in text or "unknown ca" in text or "bad certificate" in text:
            return (
                f"the broker at {where} refused the client certificate "
                f"(TENURE_KAFKA_SSL_CERTFILE/TENURE_KAFKA_SSL_KEYFILE): {exc}"
            )
        return (
            f"TLS with {where} failed: is TENURE_KAFKA_SECURITY_PROTOCOL="
            f"{settings.kafka_security_protocol} the listener's protocol? {exc}"
        )
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return _diagnose(cause, settings, where)
    return None


async def _probe(
    settings: CommonSettings, security: dict[str, Any], timeout_s: float
) -> tuple[bool, str | None]:
    """Connect to each bootstrap host in turn (TLS handshake, SASL login): (whether one
    accepted us, the configuration error seen, if any)."""
    last: str | None = None
    for host, port in _hosts(settings.kafka_bootstrap):
        where = f"{host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id="tenure-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    **security,
                ),
                timeout_s,
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            problem = _diagnose(exc, settings, where)
            if problem is None and isinstance(exc, KafkaConnectionError):
                # connected, then closed by the broker before it answered: the listener
                # speaks another protocol (or the broker is stopping: check_connection
                # asks again before it believes this)
                problem = (
                    f"the broker at {where} closed the connection without an answer: is "
                    f"TENURE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} "
                    "the listener's protocol?"
                )
                return True, problem
            if problem is not None:
                return False, problem
            last = f"{where}: {exc!r}"
            continue
        conn.close()
        return True, None
    log.warning("no Kafka bootstrap server answered the start-up check: %s", last)
    return False, None


async def check_connection(settings: CommonSettings, *, timeout_s: float = 10.0) -> None:
    """Check once, at start-up, that Kafka accepts these settings' connections.

    Raises :class:`KafkaSecurityError` (one line naming the setting) when the TLS files
    cannot be used, the broker's certificate is not trusted or does not name its host,
    the client certificate or the SASL credentials or mechanism are refused, or the
    broker drops our requests (a protocol that is not the listener's). Returns if the
    cluster answered a metadata request, and also if no bootstrap server could be
    reached at all: that is an outage, which each client waits out as before.
    """
    security = security_options(settings)
    reached, problem = await _probe(settings, security, timeout_s)
    if reached and problem is not None:  # closed without an answer: once more to be sure
        await asyncio.sleep(1.0)
        reached, problem = await _probe(settings, security, timeout_s)
    if problem is not None:
        raise KafkaSecurityError(problem)
    if not reached:
        return
    admin = AIOKafkaAdminClient(
        **client_options(settings),
        client_id="tenure-check",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.list_topics()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaSecurityError(
            f"Kafka at {settings.kafka_bootstrap} accepted the connection but not our "
            f"requests: is TENURE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} "
            f"the listener's protocol? ({exc!r})"
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def require_connection(settings: CommonSettings, *, service: str, timeout_s: float = 10.0) -> None:
    """:func:`check_connection` for a process's ``main``: a :class:`KafkaSecurityError`
    stops it with status 1 and the one line on stderr (``SystemExit``)."""
    try:
        asyncio.run(check_connection(settings, timeout_s=timeout_s))
    except KafkaSecurityError as exc:
        log.error("%s", exc)
        raise SystemExit(f"{service}: {exc}") from None
