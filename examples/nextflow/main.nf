#!/usr/bin/env nextflow
/*
 * Segment a cohort with Nextflow: one task per slide (`cerberus segment SLIDE -o .`), at
 * most params.max_forks at a time, a failed task started again (errorStrategy 'retry'),
 * each slide's outputs published to params.out.
 *
 *   nextflow run examples/nextflow/main.nf --slides '/data/tcga/*.svs' --out /data/out
 *   nextflow run examples/nextflow/main.nf -profile slurm --slides '/data/tcga/*.svs' --out /data/out
 *   nextflow run examples/nextflow/main.nf -profile docker --slides ... --out ...  -resume
 *   cerberus status /data/out
 *
 * Settings are in nextflow.config (params, resources, profiles: slurm, docker, apptainer);
 * any param can be given on the command line (--options '--device cuda --batch-size 32').
 * -resume skips slides whose task already succeeded. A slide in params.out counts as
 * finished only when its record S.run.json and every file it lists (with its size) are
 * there, so `cerberus status` and later runs never take a slide still being published,
 * or published in part, for done.
 */
nextflow.enable.dsl = 2

process SEGMENT {
    tag "${slide.baseName}"
    maxForks params.max_forks
    errorStrategy 'retry'
    maxRetries params.retries
    publishDir params.out, mode: params.publish_mode

    input:
    path slide

    output:
    path "${slide.baseName}.*"

    script:
    def model = params.model ? "--model ${params.model}" : ''
    """
    cerberus segment ${slide} -o . ${model} \\
        --workers ${Math.max(1, task.cpus - 2)} ${params.options}
    """
}

workflow {
    if (!params.slides || !params.out) {
        error "give the slides and the output folder: --slides '/data/*.svs' --out /data/out"
    }
    SEGMENT(Channel.fromPath(params.slides, checkIfExists: true))
}
