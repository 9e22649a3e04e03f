"""Patient positioning and scan-planning assistant for CT and fluoroscopy.

See ``DESIGN.md`` in the shared folder for the architecture; all geometry is in millimetres and, unless a
name says otherwise, in the scanner frame (IEC 61217 fixed system).
"""

__version__ = "0.1.0"
