"""Who sent a request: bearer API keys that each name a tenant, one shared key, or a header.

What it is: `Tenants.from_config(config)` reads `--api-keys-file` (one `TENANT KEY` per line, `#`
comments; errors name the file and line) or takes `--api-key`; `authorize(headers)` checks the bearer
token (Unauthorized otherwise) and returns the key's tenant; `tenant_of(headers)` adds the
`--tenant-header` case, for servers without keys. With `--isolation tenant` the engine groups a
request only with requests of the same tenant. What it is not: user management (keys are read once at
start-up) or a secret store (the file must be readable only by the server's user).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from revmux.errors import ConfigError, InputError
from revmux.serve.config import ServeConfig
from revmux.serve.errors import Unauthorized


def load_api_keys(path: str | Path) -> dict[str, str]:
    """{key: tenant} from a file of `TENANT KEY` lines, or ConfigError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--api-keys-file {path} cannot be read ({exc}).") from exc
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise ConfigError(
                f"{path}:{number}: expected 'TENANT KEY' (two fields separated by spaces), got {len(parts)} fields."
            )
        tenant, key = parts
        if key in keys:
            raise ConfigError(
                f"{path}:{number}: this key is already given to tenant {keys[key]!r}; keys must be unique."
            )
        keys[key] = tenant
    if not keys:
        raise ConfigError(f"--api-keys-file {path} holds no 'TENANT KEY' line.")
    return keys


@dataclass
class Tenants:
    """The server's view of who may call it and who each caller is (see the module docstring)."""

    keys: dict[str, str] = field(default_factory=dict)  # key -> tenant; empty: no per-tenant keys
    shared_key: str | None = None
    header: str | None = None
    required: bool = False  # isolation "tenant": every /predict must name its tenant

    @classmethod
    def from_config(cls, config: ServeConfig) -> Tenants:
        keys = load_api_keys(config.api_keys_file) if config.api_keys_file else {}
        return cls(keys, config.api_key, config.tenant_header, config.isolation == "tenant")

    @property
    def tenant_names(self) -> list[str]:
        return sorted(set(self.keys.values()))

    def authorize(self, headers: Mapping[str, str]) -> str | None:
        """The tenant of the bearer key (None with one shared key or no keys), or Unauthorized."""
        if not self.keys and self.shared_key is None:
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() == "bearer":
            if self.shared_key is not None and hmac.compare_digest(given, self.shared_key.encode()):
                return None
            found = None
            for key, tenant in self.keys.items():  # compare against every key: no early exit on a match
                if hmac.compare_digest(given, key.encode()):
                    found = tenant
            if found is not None:
                return found
        raise Unauthorized("missing or wrong API key; send the header `Authorization: Bearer <key>`.")

    def tenant_of(self, headers: Mapping[str, str]) -> str | None:
        """Authorize, then the request's tenant: its key's, else the tenant header's value."""
        tenant = self.authorize(headers)
        if tenant is None and self.header:
            tenant = headers.get(self.header.lower(), "").strip() or None
        if tenant is None and self.required:
            raise InputError(
                f"this server groups requests by tenant: send the header `{self.header}: <tenant>`."
                if self.header
                else "this server groups requests by tenant: authenticate with your tenant's API key."
            )
        return tenant
