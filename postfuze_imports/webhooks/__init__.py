"""Webhooks: endpoints, events, Standard Webhooks signing and the dispatcher.

This package handles an event only as a type and a JSON body. It depends on the database,
the settings, the crypto helpers and the outbound guard, never on the API or the imports.
"""
