"""Webhooks: endpoints, events, Standard Webhooks signing and the dispatcher.

This package knows an event only as a type and a JSON body; it depends on the database,
the settings, the crypto helpers and the outbound guard, never on the API or the imports.
"""
