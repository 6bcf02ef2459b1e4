"""Hyperdrive (DEP-0000): files and folders over a metadata core and a content core."""
