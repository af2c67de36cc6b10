"""Which authenticator serves the run API: ``RELAY_API_AUTH`` and each mode's settings.

The authenticators themselves are in ``functions/http/callers.py`` (and JWTs in
``functions/http/jwt_auth.py``, imported only when ``jwt`` is configured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

from core.errors import ConfigurationError
from functions.http.callers import (
    ApiKeyCheck,
    Authenticator,
    CredentialChain,
    CredentialCheck,
    Grants,
    OpenAuthenticator,
    PlatformAuthenticator,
)

if TYPE_CHECKING:
    from core.ports.api_keys import ApiKeyStore
    from functions.settings import Settings

log = logging.getLogger("relay.http.auth")

AUTH_MODES: Final = ("api_key", "jwt", "platform", "public")


def auth_modes(settings: Settings, *, is_loopback_dev: bool = False) -> tuple[str, ...]:
    """The authentication modes of ``settings`` (``RELAY_API_AUTH`` or the backend's default).

    Defaults: ``platform`` on gcp and aws; ``api_key`` locally, except ``relay dev`` on
    a loopback address, which is open (mode ``local``) unless ``RELAY_API_AUTH`` is set.

    Raises:
        ConfigurationError: an unknown mode, or ``platform``/``public`` combined.
    """
    if not settings.api_auth:
        if settings.backend in ("gcp", "aws"):
            return ("platform",)
        return ("local",) if is_loopback_dev else ("api_key",)
    modes = tuple(dict.fromkeys(m.strip().lower() for m in settings.api_auth.split(",")))
    unknown = [m for m in modes if m not in AUTH_MODES]
    if unknown or not modes:
        raise ConfigurationError(
            f"RELAY_API_AUTH={settings.api_auth!r}: unknown mode(s) {unknown}; use api_key, "
            "jwt, api_key,jwt, platform or public"
        )
    if len(modes) > 1 and ("platform" in modes or "public" in modes):
        raise ConfigurationError(
            f"RELAY_API_AUTH={settings.api_auth!r}: platform and public stand alone; "
            "combine only api_key and jwt"
        )
    return modes


def authenticator_for(
    settings: Settings,
    *,
    api_keys: Callable[[], ApiKeyStore] | None = None,
    is_loopback_dev: bool = False,
) -> Authenticator:
    """The run API's authenticator for ``settings`` (see ``auth_modes``).

    Args:
        settings: Supplies ``RELAY_API_AUTH`` and the modes' variables.
        api_keys: Returns the key store (``functions.wiring.get_api_key_store``).
        is_loopback_dev: ``relay dev`` bound to a loopback address.

    Raises:
        ConfigurationError: a mode's configuration is missing or wrong (naming the variable).
    """
    modes = auth_modes(settings, is_loopback_dev=is_loopback_dev)
    if modes == ("local",):
        return OpenAuthenticator("local")
    if modes == ("public",):
        log.warning(
            "RELAY_API_AUTH=public: the run API is open to everyone, who may start and read "
            "every saga's runs; use api_key, jwt or platform in any shared deployment"
        )
        return OpenAuthenticator("anonymous")
    if modes == ("platform",):
        if settings.backend not in ("gcp", "aws"):
            raise ConfigurationError(
                f"RELAY_API_AUTH=platform needs RELAY_BACKEND gcp or aws (is {settings.backend!r});"
                " locally use api_key or jwt"
            )
        try:
            grants = Grants.parse(settings.platform_grants, what="RELAY_PLATFORM_GRANTS")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        cloud: Literal["gcp", "aws"] = "gcp" if settings.backend == "gcp" else "aws"
        return PlatformAuthenticator(cloud, grants)
    checks: list[CredentialCheck] = []
    for mode in modes:
        if mode == "api_key":
            if api_keys is None:
                raise ConfigurationError("RELAY_API_AUTH=api_key needs an API key store")
            checks.append(ApiKeyCheck(api_keys))
        else:
            from functions.http.jwt_auth import JwtCheck

            checks.append(JwtCheck.from_settings(settings))
    return CredentialChain(checks)
