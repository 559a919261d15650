"""A synthetic audiovisual "Foley world" for proving NAG with our own, tiny, trained models.

Each clip shows 2-3 sound objects out of four, each with a visual and a sound signature no other
object shares, and with events synchronised to the picture:

* ``ball``: a white disk bouncing in the top-left quadrant every 0.9-1.4 s; after each floor
  contact a 0.4 s tone (harmonics 7-11 of 62.5 Hz, 437-688 Hz), and while it sounds an orange
  splash on the floor under the ball and an orange glow over the floor;
* ``lamp``: a square in the top-right quadrant, bright yellow while lit (and lighting the room
  with a broad glow); a beep around 1 kHz (harmonics 14-19 of 62.5 Hz, 875-1187.5 Hz) while lit;
* ``fan``: three spinning blue blades in the bottom-right quadrant; a 125 Hz (+250 Hz) hum;
* ``rain``: cyan streaks falling in the bottom-left quadrant; 5-7 kHz band-limited noise.

:mod:`nag_core.world.scene` renders clips (the demo shows one). The model-free detectors that
measure the sound signatures, and the training of the world's models, are benchmark code
(bench/world), not part of the installed package.
"""

from .scene import OBJECTS, CAPTIONS, Clip, render_clip, sample_objects  # noqa: F401
