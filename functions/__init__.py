"""Entry points, the bundle's sagas and demo services: the edge where configuration is read."""
