//! Gateway API HTTPRoute router (being written).
use super::*;
pub struct GatewayApiRouter;
impl GatewayApiRouter {
    pub fn new(_c: kube::Client, _r: String, _b: Backends) -> Self { todo!() }
}
#[async_trait::async_trait]
impl TrafficRouter for GatewayApiRouter {
    fn name(&self) -> &'static str { "gatewayAPI" }
    async fn verify(&self) -> Result<(), TrafficError> { todo!() }
    async fn current_weight(&self) -> Result<WeightReading, TrafficError> { todo!() }
    async fn set_weight(&self, _w: u8) -> Result<WeightReading, TrafficError> { todo!() }
    async fn restore_stable(&self) -> Result<(), TrafficError> { todo!() }
}
