"""The scoring worker's Kafka security: the settings as faust's ``broker_credentials``."""

from __future__ import annotations

import faust

from common.kafka import security_options
from common.settings import CommonSettings


def broker_credentials(common: CommonSettings) -> faust.auth.Credentials | None:
    """The Kafka security settings as faust's documented ``broker_credentials``
    (``faust.SSLCredentials``, ``faust.SASLCredentials``), from the same options every
    other client gets (:func:`common.kafka.security_options`): the TLS context, SASL
    mechanism and login are built in one place. None for PLAINTEXT."""
    options = security_options(common)
    protocol = options["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(  # SASL_PLAINTEXT, or SASL_SSL with the context
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options.get("ssl_context"),
        mechanism=options["sasl_mechanism"],
    )
