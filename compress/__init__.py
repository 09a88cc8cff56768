"""Compression passes: one module per family, each pass registered with `@register_pass`."""
