"""A third-party ablate plugin (test fixture): importing ``ablate_toy_plugin.variants`` registers its variants."""
