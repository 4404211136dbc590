"""The NF registry: profiles, heartbeats, subscriptions, stores (memory, etcd).

Start it with ``gateway.registry.startup.start_registry``."""
