"""Models the services wrap: data, networks, training, search, compression and the store."""
