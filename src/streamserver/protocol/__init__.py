"""The Twisted side of the server: one cooperative mixin per concern.

``server.py`` is the one place the mixins are composed; ``base.py`` holds the
root that ends every hook chain and the checks that keep the chain whole.
"""
