"""ComfyUI node pack of Tri-Ergon. Thin wrappers over `triergon_core`; the nodes arrive with their issue."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
