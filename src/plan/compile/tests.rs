use super::*;
use crate::api::{
    AnalysisSpec, GatewayApiRouting, MetricSpec, PauseStep, PrometheusSpec, TrafficRouting,
    VersionRef,
};

fn spec() -> RolloutSpec {
    RolloutSpec {
        stable: VersionRef {
            service: "checkout-v1".into(),
            deployment: Some("checkout-v1".into()),
            ..Default::default()
        },
        canary: VersionRef {
            service: "checkout-v2".into(),
            deployment: Some("checkout-v2".into()),
            ..Default::default()
        },
        traffic_routing: TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "checkout".into(),
            }),
            ..Default::default()
        },
        steps: None,
        analysis: Some(AnalysisSpec {
            interval: Some("30s".into()),
            prometheus: Some(PrometheusSpec {
                address: "http://prometheus:9090".into(),
            }),
            metrics: vec![MetricSpec {
                name: "error-rate".into(),
                query: "q".into(),
                max: Some(0.01),
                min: None,
                failure_limit: Some(2),
            }],
            consecutive_error_limit: None,
            ..Default::default()
        }),
        paused: false,
        pause_deadline: None,
        notifications: None,
        depends_on: None,
        blue_green: None,
    }
}

fn fields(spec: &RolloutSpec) -> Vec<String> {
    validate(spec)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn default_plan_is_5_33_50_100_with_pauses() {
    let plan = validate(&spec()).unwrap();
    let weights: Vec<u8> = (0..plan.steps.len())
        .map(|i| plan.target_weight(i))
        .collect();
    assert_eq!(weights, vec![5, 5, 33, 33, 50, 50, 100, 100]);
    assert_eq!(plan.interval, Duration::from_secs(30));
    assert_eq!(plan.consecutive_error_limit, 4);
    assert_eq!(plan.metrics[0].failure_limit, 2);
    assert_eq!(plan.canary_ref, "checkout-v2/checkout-v2");
}

#[test]
fn an_analysis_that_only_compares_looks_every_5s_and_tolerates_2_minutes_of_errors() {
    let mut s = spec();
    let a = s.analysis.as_mut().unwrap();
    a.interval = None;
    a.metrics.clear();
    a.compare = vec![crate::api::CompareSpec {
        name: "http-errors".into(),
        requests: "r{{service}}".into(),
        failures: "f{{service}}".into(),
        tolerance: None,
    }];
    let plan = validate(&s).unwrap();
    assert_eq!(plan.interval, Duration::from_secs(5));
    assert_eq!(plan.consecutive_error_limit, 24);
    // With a threshold metric too, each look counts against its
    // failureLimit: 30s.
    let a = s.analysis.as_mut().unwrap();
    a.metrics = spec().analysis.unwrap().metrics;
    let plan = validate(&s).unwrap();
    assert_eq!(plan.interval, Duration::from_secs(30));
    assert_eq!(plan.consecutive_error_limit, 4);
    // An explicit interval and limit win.
    let a = s.analysis.as_mut().unwrap();
    a.interval = Some("45s".into());
    let plan = validate(&s).unwrap();
    assert_eq!(plan.consecutive_error_limit, 3);
    s.analysis.as_mut().unwrap().consecutive_error_limit = Some(7);
    assert_eq!(validate(&s).unwrap().consecutive_error_limit, 7);
}

#[test]
fn decreasing_weight_is_rejected_naming_the_step() {
    let mut s = spec();
    s.steps = Some(vec![
        Step {
            set_header_route: None,
            set_weight: Some(50),
            pause: None,
        },
        Step {
            set_header_route: None,
            set_weight: Some(20),
            pause: None,
        },
    ]);
    assert_eq!(fields(&s), vec!["spec.steps[1].setWeight"]);
}

#[test]
fn bad_duration_and_out_of_range_weight_are_named() {
    let mut s = spec();
    s.steps = Some(vec![
        Step {
            set_header_route: None,
            set_weight: Some(150),
            pause: None,
        },
        Step {
            set_header_route: None,
            set_weight: None,
            pause: Some(PauseStep {
                duration: Some("2 minutes".into()),
            }),
        },
        Step {
            set_header_route: None,
            set_weight: Some(10),
            pause: Some(PauseStep::default()),
        },
    ]);
    assert_eq!(
        fields(&s),
        vec![
            "spec.steps[0].setWeight",
            "spec.steps[1].pause.duration",
            "spec.steps[2]"
        ]
    );
}

#[test]
fn pause_deadline_is_parsed_or_named() {
    let mut s = spec();
    assert_eq!(validate(&s).unwrap().pause_deadline, None);
    s.pause_deadline = Some("1h30m".into());
    assert_eq!(
        validate(&s).unwrap().pause_deadline,
        Some(Duration::from_secs(5400))
    );
    s.pause_deadline = Some("an hour".into());
    assert_eq!(fields(&s), vec!["spec.pauseDeadline"]);
}

#[test]
fn same_service_for_both_versions_is_rejected() {
    let mut s = spec();
    s.canary.service = "checkout-v1".into();
    assert_eq!(fields(&s), vec!["spec.canary.service"]);
}

#[test]
fn metric_without_bound_and_missing_router_are_rejected() {
    let mut s = spec();
    s.analysis.as_mut().unwrap().metrics[0].max = None;
    s.traffic_routing.gateway_api = None;
    assert_eq!(
        fields(&s),
        vec!["spec.trafficRouting", "spec.analysis.metrics[0]"]
    );
}

#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("-5s").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn manual_pause_and_explicit_steps_build_the_plan() {
    let mut s = spec();
    s.steps = Some(vec![
        Step {
            set_header_route: None,
            set_weight: Some(5),
            pause: None,
        },
        Step {
            set_header_route: None,
            set_weight: None,
            pause: Some(PauseStep {
                duration: Some("2m".into()),
            }),
        },
        Step {
            set_header_route: None,
            set_weight: None,
            pause: Some(PauseStep::default()),
        },
        Step {
            set_header_route: None,
            set_weight: Some(100),
            pause: None,
        },
    ]);
    let plan = validate(&s).unwrap();
    assert_eq!(
        plan.steps,
        vec![
            PlanStep::SetWeight(5),
            PlanStep::Pause(Some(Duration::from_secs(120))),
            PlanStep::Pause(None),
            PlanStep::SetWeight(100)
        ]
    );
    assert_eq!(plan.target_weight(2), 5);
}
