"""The documentation (Markdown and its images), shipped in the wheel as the package ``falip.docs`` so that an
installed ``falip-run --help`` can name a folder that holds it (``falip.io.docs_dir``)."""
