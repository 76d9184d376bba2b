// The web page's script: filled in by the web page work.
