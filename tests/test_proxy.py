"""The provider proxy of `llmlog serve`: the real SDKs with their base URL pointed at it, the
local fake provider behind it, and what it records."""

from __future__ import annotations

import datetime
import http.client
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2 as httpx
import openai
import pytest

from llmlog.capture.proxy import Upstreams
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from tests.backends import SQLiteBackend, stored_bytes
from tests.webui import Running, free_port

KEY = "sk-ant-proxy-secret-0123456789"
CONTEXT = {
    "llmlog-session-id": "sess-proxy",
    "llmlog-user-id": "user-proxy",
    "llmlog-feature": "via-proxy",
    "llmlog-prompt-version": "proxy@v2",
    "llmlog-metadata": json.dumps({"tier": "pro", "n": 3}),
    "llmlog-tags": "beta, eu",
}
X = [{"role": "user", "content": "x"}]
BODY = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": X}


@pytest.fixture
def proxy(tmp_path: Path, fake: FakeProvider) -> Iterator[Running]:
    fake.reset()
    upstreams = Upstreams(anthropic=fake.url, openai=fake.url)
    with Running(SQLiteBackend(tmp_path / "proxy.db"), upstreams=upstreams) as running:
        yield running


def recorded(p: Running, n: int) -> list[Call]:
    """The proxy's calls once `n` are stored (its writer stores them off the request's path)."""
    deadline = time.monotonic() + 10
    while p.store.count(CallFilter()) < n:
        assert time.monotonic() < deadline, f"{p.store.count(CallFilter())} of {n} calls recorded"
        time.sleep(0.02)
    time.sleep(0.1)
    calls = list(p.store.iter_calls(CallFilter()))
    assert len(calls) == n
    return calls


def claude(p: Running, **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=KEY, base_url=p.base + "/anthropic", max_retries=0, default_headers=CONTEXT, **kw
    )


def gpt(p: Running) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=p.base + "/openai/v1", max_retries=0, default_headers=CONTEXT)


def test_anthropic_through_the_proxy_is_recorded_with_its_context(
    proxy: Running, fake: FakeProvider, tmp_path: Path
) -> None:
    direct = anthropic.Anthropic(api_key=KEY, base_url=fake.anthropic_base_url, max_retries=0)
    body = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    via = claude(proxy).messages.create(system="Be brief.", **body)  # type: ignore[call-overload]
    plain = direct.messages.create(system="Be brief.", **body)  # type: ignore[call-overload]
    assert via.content == plain.content and via.usage == plain.usage  # the provider's answer, as is
    (c,) = recorded(proxy, 1)
    assert (c.provider, c.model, c.system_prompt) == ("anthropic", "claude-sonnet-4-6", "Be brief.")
    assert c.input_tokens == via.usage.input_tokens and c.output_tokens == via.usage.output_tokens
    assert c.cost_usd and c.cost_usd > 0 and c.latency_ms is not None
    assert (c.session_id, c.user_id, c.feature, c.prompt_template_version) == (
        "sess-proxy", "user-proxy", "via-proxy", "proxy@v2",
    )  # fmt: skip
    assert c.metadata and c.metadata["tier"] == "pro" and c.tags == ["beta", "eu"]
    # The context headers were taken off, the key forwarded, and the key stored nowhere.
    sent = fake.requests[0].headers
    assert not [h for h in sent if h.startswith("llmlog-")]
    assert KEY in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    proxy.store.close()
    assert KEY.encode() not in stored_bytes(tmp_path / "proxy.db")


def test_streams_pass_through_event_by_event(proxy: Running, fake: FakeProvider) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "tell"}],
    }
    with claude(proxy).messages.stream(**body) as s:  # type: ignore[arg-type]
        via = [e.type for e in s]
        text = s.get_final_message()
    direct = anthropic.Anthropic(api_key=KEY, base_url=fake.anthropic_base_url, max_retries=0)
    with direct.messages.stream(**body) as s:  # type: ignore[arg-type]
        plain = [e.type for e in s]
    assert via == plain
    (c,) = recorded(proxy, 1)
    assert c.output_tokens == text.usage.output_tokens and c.first_token_ms is not None
    assert c.response and [b["text"] for b in c.response["content"]] == [b.text for b in text.content]  # type: ignore[union-attr]


def test_first_event_arrives_before_the_upstream_finishes(tmp_path: Path) -> None:
    # A provider that takes 150 ms between chunks: a buffering proxy would hold the first
    # event until the last, seconds later.
    with FakeProvider(first_token_ms=50, chunk_ms=150) as slow:
        upstreams = Upstreams(anthropic=slow.url, openai=slow.url)
        with Running(SQLiteBackend(tmp_path / "p.db"), upstreams=upstreams) as p:
            client = claude(p)
            started = time.monotonic()
            stream = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=300, stream=True,
                messages=[{"role": "user", "content": "a long story please " * 5}],
            )  # fmt: skip
            events = iter(stream)
            next(events)
            first = time.monotonic() - started
            count = 1 + sum(1 for _ in events)
            total = time.monotonic() - started
    assert count > 12 and total > 1.5, (count, total)
    assert first < total / 3, (first, total)


@pytest.mark.parametrize("first_token_ms, chunk_ms", [(0, 100), (4000, 0)], ids=["streaming", "silent"])
def test_a_client_that_goes_away_mid_stream_leaves_an_incomplete_call(
    tmp_path: Path, first_token_ms: int, chunk_ms: int
) -> None:
    # The provider keeps streaming for seconds, or says nothing for seconds before its first
    # token; the client hangs up meanwhile.
    with FakeProvider(first_token_ms=first_token_ms, chunk_ms=chunk_ms) as slow:
        upstreams = Upstreams(anthropic=slow.url, openai=slow.url)
        with Running(SQLiteBackend(tmp_path / "p.db"), upstreams=upstreams) as p:
            conn = http.client.HTTPConnection("127.0.0.1", int(p.base.rsplit(":", 1)[1]), timeout=10)
            body = {
                **BODY,
                "max_tokens": 300,
                "stream": True,
                "messages": [{"role": "user", "content": "long " * 9}],
            }
            conn.request(
                "POST", "/anthropic/v1/messages", json.dumps(body), {"content-type": "application/json"}
            )
            answer = conn.getresponse()
            assert answer.status == 200
            if not first_token_ms:
                assert answer.readline().startswith(b"event: ")
            started = time.monotonic()
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
            (c,) = recorded(p, 1)
            # Recorded as cut short, soon after the client left, not when the provider ended
            # or spoke again.
            assert c.metadata is not None and c.metadata["llmlog"]["incomplete"] is True
            assert time.monotonic() - started < 2.5


def test_paths_go_on_as_sent_and_a_get_gets_no_body(proxy: Running, fake: FakeProvider) -> None:
    for path in (
        "/openai/v1/files/my%20file%25x",
        "/openai/v1/files/caf%C3%A9",
        "/c/e30/openai/v1/files/a%2Fb",
    ):
        httpx.get(proxy.base + path + "?q=a%2Bb")
    assert [r.path for r in fake.requests] == [
        "/v1/files/my%20file%25x",
        "/v1/files/caf%C3%A9",
        "/v1/files/a%2Fb",
    ]
    assert all("content-length" not in r.headers for r in fake.requests)


def _certificates(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate authority of our own (its certificate in a file), and a server context
    for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def made(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = made(
        "llmlog test CA",
        ca_key,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmlog test CA")]),
        ca_key,
        True,
    )
    cert = made("127.0.0.1", key, ca.subject, ca_key, False)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return ca_file, server


def test_a_provider_over_tls_is_reached_with_the_trust_the_sdks_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, server = _certificates(tmp_path)
    with FakeProvider(tls=server) as secure:
        assert secure.url.startswith("https://")
        upstreams = Upstreams(anthropic=secure.url, openai=secure.url)
        # Trusted as the SDKs trust a certificate authority: SSL_CERT_FILE.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        with Running(SQLiteBackend(tmp_path / "a.db"), upstreams=upstreams) as p:
            client = claude(p)
            client.messages.create(**BODY)  # type: ignore[call-overload]
            with client.messages.stream(**BODY) as events:  # type: ignore[arg-type]
                assert events.get_final_message().usage.output_tokens
            calls = recorded(p, 2)
            assert all(c.error is None and c.output_tokens for c in calls)
        # Not trusted: refused, said and recorded, never sent in the clear.
        monkeypatch.delenv("SSL_CERT_FILE")
        with Running(SQLiteBackend(tmp_path / "b.db"), upstreams=upstreams) as p:
            r = httpx.post(p.base + "/anthropic/v1/messages", json=BODY)
            assert r.status_code == 502 and "certificate" in r.json()["error"]["message"].lower()
            (c,) = recorded(p, 1)
            assert c.error and c.error["type"] == "connection_error"
        assert len(secure.requests) == 2


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
def test_an_http_proxy_in_the_environment_is_honoured_as_the_sdks_honour_it(
    tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # A forward proxy on loopback (as a company's egress proxy would be) that sends what it
    # is asked for to the fake provider and remembers the absolute URLs it was asked for.
    seen: list[str] = []

    class Forward(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            body = self.rfile.read(int(self.headers["content-length"]))
            path = urllib.parse.urlsplit(self.path).path
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")}
            answer = httpx.post(fake.url + path, content=body, headers=headers)
            self.send_response(answer.status_code)
            self.send_header("content-type", answer.headers["content-type"])
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: object) -> None:
            pass

    fake.reset()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    far = "http://provider.example.invalid"  # no such host: reached only through the proxy
    try:
        monkeypatch.setenv(variable, f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the test's own requests go direct
        with Running(SQLiteBackend(tmp_path / "a.db"), upstreams=Upstreams(anthropic=far, openai=far)) as p:
            reply = claude(p).messages.create(**BODY)  # type: ignore[call-overload]
            assert reply.usage.output_tokens
            (c,) = recorded(p, 1)
            assert c.error is None and seen == [far + "/v1/messages"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,provider.example.invalid")
        with Running(SQLiteBackend(tmp_path / "b.db"), upstreams=Upstreams(anthropic=far, openai=far)) as p:
            r = httpx.post(p.base + "/anthropic/v1/messages", json=BODY)
            assert r.status_code == 502 and len(seen) == 1
    finally:
        server.shutdown()


@pytest.mark.parametrize("streaming", [False, True])
def test_openai_chat_and_responses_with_tools(proxy: Running, streaming: bool) -> None:
    tools = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order",
              "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]  # fmt: skip
    messages = [{"role": "user", "content": "where is order 42? use the tool"}]
    client = gpt(proxy)
    if streaming:
        stream = client.chat.completions.create(
            model="gpt-4.1", messages=messages, tools=tools,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        assert list(stream)
    else:
        reply = client.chat.completions.create(model="gpt-4.1", messages=messages, tools=tools)  # type: ignore[arg-type]
        assert reply.choices
    client.responses.create(model="gpt-4.1", input="hello", stream=streaming)  # type: ignore[call-overload]
    chat, responses = sorted(recorded(proxy, 2), key=lambda c: c.timestamp)
    assert chat.provider == "openai" and chat.tools and chat.tools[0]["function"]["name"] == "lookup_order"
    assert chat.input_tokens and chat.feature == "via-proxy"
    assert responses.model and responses.response and responses.input_tokens


def test_upstream_errors_reach_the_client_as_they_were_and_are_recorded(
    proxy: Running, fake: FakeProvider
) -> None:
    client = claude(proxy)
    fake.fail_next("529")
    with pytest.raises(anthropic.InternalServerError) as info:  # the SDK's own exception
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529
    fake.fail_next("429")
    with pytest.raises(openai.RateLimitError):
        gpt(proxy).chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}])
    calls = sorted(recorded(proxy, 2), key=lambda c: c.timestamp)
    assert calls[0].error and calls[0].error.get("status") == 529
    assert calls[1].error and calls[1].error.get("status") == 429


def test_unreachable_and_slow_upstreams(tmp_path: Path, fake: FakeProvider) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with Running(SQLiteBackend(tmp_path / "a.db"), upstreams=Upstreams(anthropic=closed, openai=closed)) as p:
        r = httpx.post(
            p.base + "/anthropic/v1/messages", json={"model": "m", "max_tokens": 1, "messages": []}
        )
        assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_unreachable"
        (c,) = recorded(p, 1)
        assert c.error and c.error["type"] == "connection_error"
    slow = Upstreams(anthropic=fake.url, openai=fake.url, timeout_s=0.5)
    with Running(SQLiteBackend(tmp_path / "b.db"), upstreams=slow) as p:
        fake.fail_next("timeout")
        r = httpx.post(
            p.base + "/anthropic/v1/messages", timeout=10,
            json=BODY,
        )  # fmt: skip
        assert r.status_code == 504
        (c,) = recorded(p, 1)
        assert c.error and c.error["type"] == "timeout"


def test_other_paths_pass_through_unrecorded_and_bad_context_is_refused(
    proxy: Running, fake: FakeProvider
) -> None:
    count = claude(proxy).messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    assert count.input_tokens > 0
    r = httpx.post(proxy.base + "/openai/v1/nowhere", json={})
    assert r.status_code == 404  # the provider's own answer
    r = httpx.post(
        proxy.base + "/anthropic/v1/messages",
        headers={"llmlog-metadata": "{not json"},
        json={"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400 and "llmlog-metadata" in r.json()["error"]
    assert [q.path for q in fake.requests] == ["/v1/messages/count_tokens", "/v1/nowhere"]
    time.sleep(0.3)
    assert proxy.store.count(CallFilter()) == 0


def test_the_ingest_token_guards_the_proxy(tmp_path: Path, fake: FakeProvider) -> None:
    upstreams = Upstreams(anthropic=fake.url, openai=fake.url)
    with Running(SQLiteBackend(tmp_path / "t.db"), upstreams=upstreams, ingest_token="tok", token="ui") as p:
        body = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(p.base + "/anthropic/v1/messages", json=body).status_code == 401
        ok = httpx.post(p.base + "/anthropic/v1/messages", json=body, headers={"llmlog-token": "tok"})
        assert ok.status_code == 200
        assert "llmlog-token" not in fake.requests[-1].headers
