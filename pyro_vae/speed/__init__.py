"""CPU speed paths, each with an environment switch (:mod:`~pyro_vae.speed.switches`) that turns
it off: oneDNN's fused Linear + activation (:mod:`~pyro_vae.speed.fused_linear`) and glibc keeping
freed memory (:mod:`~pyro_vae.speed.allocator`). Values differ by float rounding only."""
