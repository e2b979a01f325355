"""One module per page: the headless logic of that page, which its page alone imports."""
