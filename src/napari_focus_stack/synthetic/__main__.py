from .surface import _main

_main()
