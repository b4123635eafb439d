"""Who may see what: accounts with roles, passwords, signed session cookies, API tokens.

Roles, each with what the one before has:
- **viewer**: summaries, charts and reports (the dashboard, the sessions and users lists),
  never the text of a prompt or a response;
- **debugger**: every call whole, replays and the SQL console;
- **admin**: accounts, tokens, retention and the state of the keys.

Accounts and tokens live in the store (`accounts`, `api_tokens`: private tables, out of
reach of read-only SQL), so `llmlog accounts add` and a running `llmlog serve` see the same.
Passwords are kept as scrypt hashes; tokens as SHA-256 (they are random, so a slow hash adds
nothing). A session is a random cookie; the store keeps its SHA-256, whose it is and until
when (`web_sessions`, private too), and forgets it on signing out, or when the account is
removed or its role or password changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from llmlog.store import Store
from llmlog.store.base import Account

ROLES = ("viewer", "debugger", "admin")
SCOPES = ("ingest", "read")
SESSION_S = 12 * 3600

# scrypt: 2^15 × 8 × 128 bytes = 32 MiB of memory and tens of ms per guess.
_N, _R, _P = 2**15, 8, 1


def rank(role: str | None) -> int:
    """How much a role may do: 0 for none, then viewer < debugger < admin."""
    return ROLES.index(role) + 1 if role in ROLES else 0


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password has 8 characters or more")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20, dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def new_token(scope: str) -> tuple[str, bytes]:
    """A new API token and the hash the store keeps of it."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: one of {', '.join(SCOPES)}")
    token = f"llmlog_{scope}_{secrets.token_urlsafe(32)}"
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def add_user(store: Store, name: str, role: str, password: str) -> None:
    if not name or len(name) > 100 or not name.isprintable():
        raise ValueError("an account name is 1 to 100 printable characters")
    store.add_account(name, check_role(role), hash_password(password))


def login(store: Store, name: str, password: str) -> str | None:
    """The account's role if the password is right, else None (as long either way)."""
    return check_login(store.account(name), password)


def check_login(account: Account | None, password: str) -> str | None:
    if account is None:
        verify_password(password, _DUMMY)  # the same work: timing does not tell names apart
        return None
    return account.role if verify_password(password, account.password_hash) else None


# ---------------------------------------------------------------- sessions


def new_session() -> tuple[str, bytes]:
    """A new session's cookie (random, 256 bits) and the hash the store keeps of it: the
    store says whose it is and until when, so ending it there ends it (a copied cookie
    opens nothing after signing out)."""
    cookie = secrets.token_urlsafe(32)
    return cookie, session_hash(cookie)


def session_hash(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode("utf-8", "replace")).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_DUMMY = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
