"""Where models live on disk: source parsing, download and inventory."""
