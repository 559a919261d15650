"""ComfyUI node adapters over nag_core. Every node id carries the ``NAGFoley_`` prefix."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
