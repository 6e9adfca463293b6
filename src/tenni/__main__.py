"""``python -m tenni …`` runs the command line, so launchers that take a module (``accelerate launch -m tenni fit``,
``torchrun -m tenni``) work."""

from .cli import main

if __name__ == "__main__":
    main()
