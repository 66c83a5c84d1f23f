"""The pieces of ``python -m scripts.profile_step``, one room per responsibility, imports pointing
one way: ``trainer`` builds and runs the step a preset's recipe takes; ``phased`` re-creates it from
the method's own pieces, region by region; ``flops`` counts its FLOPs and times the GEMM reference;
``measure`` profiles, times the variants, records loss curves and data loading; ``tables`` formats
the results as markdown. ``scripts/profile_step.py`` is the command line on top of them.
"""
