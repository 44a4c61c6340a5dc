"""IP allow/deny through a real `crossway serve`: the real client address decides, a spoofed
`X-Forwarded-For` counts only from a trusted proxy, refused requests never reach upstream."""

from __future__ import annotations

from crossway.config.policy import IpFilterConfig
from crossway.policy.ip_filter import IpFilterPolicy
from tests.helpers import free_port, start_gateway
from tests.policy.counting_upstream import call, counting_upstream

ROUTES = """
routes:
  - name: allow-ten
    match: {{path: {{prefix: /ten}}}}
    backend: web
    policies:
      - {{type: ip, allow: [10.0.0.0/8]}}
  - name: deny-loopback
    match: {{path: {{prefix: /deny}}}}
    backend: web
    policies:
      - {{type: ip, allow: [0.0.0.0/0], deny: [127.0.0.0/8]}}
  - name: allow-loopback
    match: {{path: {{prefix: /loop}}}}
    backend: web
    policies:
      - {{type: ip, allow: ["127.0.0.1/32", "::1/128"]}}
backends:
  web:
    type: http
    url: {upstream}
"""


async def test_ip_rules_through_the_gateway() -> None:
    async with counting_upstream() as up:
        with start_gateway(ROUTES.format(upstream=up.url)) as gw:
            spoof = {"x-forwarded-for": "10.1.2.3"}
            for path, headers in (("/ten", {}), ("/ten", spoof), ("/deny", {}), ("/deny", spoof)):
                status, _, body = await call(gw.url + path, headers=headers)
                assert status == 403, (path, headers)
                assert body["error"]["code"] == "ip_not_allowed"
            assert up.count == 0
            status, _, _ = await call(gw.url + "/loop", headers=spoof)
            assert status == 200
            assert up.count == 1


async def test_forwarded_for_counts_from_a_trusted_proxy() -> None:
    port = free_port()
    config = f"listen:\n  port: {port}\n  trusted_proxies: [127.0.0.1/32]\n" + ROUTES
    async with counting_upstream() as up:
        with start_gateway(config.format(upstream=up.url), port=port) as gw:
            status, _, _ = await call(gw.url + "/ten", headers={"x-forwarded-for": "10.1.2.3"})
            assert status == 200
            # The right-most untrusted hop is the client: a prefix the client added is ignored.
            status, _, _ = await call(
                gw.url + "/ten", headers={"x-forwarded-for": "10.9.9.9, 192.0.2.7"}
            )
            assert status == 403
            status, _, _ = await call(gw.url + "/ten")  # the proxy itself is not in 10/8
            assert status == 403
            assert up.count == 1


def test_address_forms() -> None:
    policy = IpFilterPolicy(IpFilterConfig(type="ip", allow=["10.0.0.0/8"], deny=["10.6.0.0/16"]))
    assert policy.permits("10.1.2.3")
    assert policy.permits("::ffff:10.1.2.3")  # IPv4-mapped IPv6 is matched as IPv4
    assert not policy.permits("::ffff:10.6.0.1")
    assert not policy.permits("10.6.0.1")
    assert not policy.permits("192.0.2.1")
    assert not policy.permits("")  # unknown address: matches no allow rule
    assert not policy.permits("not-an-ip")
    deny_only = IpFilterPolicy(IpFilterConfig(type="ip", deny=["fe80::/10"]))
    assert not deny_only.permits("fe80::1%eth0")
    assert deny_only.permits("2001:db8::1")
    assert deny_only.permits("")
