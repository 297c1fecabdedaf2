"""The answering methods: the registry and the fusion rules."""
