"""One module per reference twin; each registers itself with `@register_twin`."""
