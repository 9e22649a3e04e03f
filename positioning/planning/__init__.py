"""Planning: a :class:`~positioning.perception.state.PatientState` and a scan protocol -> the
:class:`~positioning.planning.plan.Plan` a technologist acts on.

Modules: ``protocol`` (protocols as YAML data), ``anatomy`` (landmark levels from COCO keypoints),
``isocenter`` (cross-section shape model), ``checks`` (stable-coded findings), ``dose`` (published
dose/noise figures), ``plan`` (``make_plan``, ``Plan.to_json``, ``plan_summary``), ``overlay`` (drawing).
Nothing here reads simulator truth.
"""
