"""A data-plane worker process of a multi-worker gateway (started by ``gateway.runner``).

It reads its instructions from the ``NFMESH_WORKER`` environment variable (JSON: config path,
overrides, worker index, control-plane address), loads the same config as the supervisor and
serves with SO_REUSEPORT until SIGTERM, then drains.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import uvloop

    from gateway.config import load_config, no_file_config
    from gateway.runner import serve_until_signal, setup_logging

    spec = json.loads(os.environ["NFMESH_WORKER"])
    path = spec.get("config_path")
    config = load_config(path) if path else no_file_config()
    setup_logging(spec.get("log_level"), config)
    o = spec.get("opts", {})
    opts = {
        "listen": tuple(o["listen"]) if o.get("listen") else None,
        "backend": o.get("backend"),
        "metrics": tuple(o["metrics"]) if o.get("metrics") else None,
        "reuse_port": True,
        "control_plane": spec.get("control_plane"),
        "metrics_socket": spec.get("metrics_socket"),
        "admin_socket": spec.get("admin_socket"),
    }
    return uvloop.run(serve_until_signal(config, opts, int(spec["index"]), path))


if __name__ == "__main__":
    sys.exit(main())
